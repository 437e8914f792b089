//! Code generation: the model struct, its gradients struct, one pruned function per
//! fetch, the training functions, and the introspection functions.
//!
//! Everything generated names the runtime through `::modelc::__private` and
//! `::modelc::ndarray`, and every local starts with `__`, so that user names never
//! collide with generated ones. Emission trusts the checks of the earlier stages.

mod fallback;
mod import;
pub mod plan;

pub use fallback::fallback;

use proc_macro2::{Ident, Literal, Span, TokenStream};
use quote::{format_ident, quote};

use crate::autodiff::Compiled;
use crate::ir::explain;
use crate::ir::NodeId;
use crate::model::{InitSpec, Model, OptimizerKind};
use crate::ops::elementwise::f32_tokens;
use crate::ops::Op;
use crate::shape::{Dim, Shape};
use crate::syntax::NodeKind;
use plan::{group_members, Program, Step};

/// `::modelc::ndarray::ArrayN<f32>`
pub fn array_ty(rank: usize) -> TokenStream {
    let id = format_ident!("Array{}", rank);
    quote!(::modelc::ndarray::#id<f32>)
}

/// `::modelc::ndarray::ArrayN::<f32>` (expression position).
pub fn array_path(rank: usize) -> TokenStream {
    let id = format_ident!("Array{}", rank);
    quote!(::modelc::ndarray::#id::<f32>)
}

/// `::modelc::ndarray::ArrayViewN<'_, f32>`
pub fn view_ty(rank: usize) -> TokenStream {
    let id = format_ident!("ArrayView{}", rank);
    quote!(::modelc::ndarray::#id<'_, f32>)
}

fn usize_lit(n: usize) -> Literal {
    Literal::usize_suffixed(n)
}

/// The tokens of a dimension: a literal, or `__d[i]` for a symbolic one.
fn dim_tokens(model: &Model, d: &Dim) -> TokenStream {
    match d {
        Dim::Static(n) => {
            let n = usize_lit(*n);
            quote!(#n)
        }
        Dim::Sym(s) => {
            let i = model.symbols.iter().position(|x| x == s).unwrap_or(0);
            quote!(__d[#i])
        }
    }
}

/// A shape as an ndarray shape argument (`()` or `[a, b]`).
fn shape_tokens(model: &Model, shape: &Shape) -> TokenStream {
    if shape.is_scalar() {
        return quote!(());
    }
    let dims = shape.0.iter().map(|d| dim_tokens(model, d));
    quote!([#(#dims),*])
}

/// The number of elements of a shape as a `u64` expression, saturating at `u64::MAX`
/// (`cost(usize::MAX)` must not overflow; see `modelc::Cost`).
fn numel_tokens(model: &Model, shape: &Shape) -> TokenStream {
    let dims = shape.0.iter().map(|d| dim_tokens(model, d));
    quote!((1u64 #(.saturating_mul(#dims as u64))*))
}

/// The workspace field holding node `id` in program `p`.
fn buf(p: &Program, id: NodeId) -> Ident {
    format_ident!("__s{}", p.slot_of(id))
}

/// Everything the emitter needs about one model.
struct Ctx<'a> {
    c: &'a Compiled,
    m: &'a Model,
    name: &'a Ident,
    state_ty: Ident,
    grads_ty: Ident,
    k: usize,
}

/// Generates the whole model.
pub fn model(c: &Compiled) -> TokenStream {
    let m = &c.model;
    let ctx = Ctx {
        c,
        m,
        name: &m.ident,
        state_ty: format_ident!("__Modelc{}State", m.ident),
        grads_ty: format_ident!("{}Gradients", m.ident),
        k: m.symbols.len(),
    };
    let mut programs: Vec<(String, Program)> =
        m.fetches.iter().map(|f| (f.name.to_string(), plan::plan(m, &[f.node]))).collect();
    let train = m.optimizer.as_ref().and_then(|_| {
        let loss = m.loss()?;
        let mut roots = vec![loss.node];
        roots.extend(c.grads.iter().map(|g| g.1));
        Some(plan::plan(m, &roots))
    });
    if let Some(t) = &train {
        programs.push(("__train".to_string(), t.clone()));
    }
    // Plain SGD: a dedicated train_step program whose weight updates are fused into the
    // gradient products (see `sgd_updates`).
    let fused = train.as_ref().and_then(|_| sgd_updates(c)).map(|updates| {
        let loss = m.loss().map_or(0, |l| l.node);
        let mut roots = vec![loss];
        for (_, u) in &updates {
            match *u {
                Update::MatMul { a, b, .. } => roots.extend([a, b]),
                Update::SumTo { src } => roots.push(src),
                Update::Plain { grad } => roots.push(grad),
            }
        }
        // The updates read inputs straight from the caller's views: as roots they would
        // be copied into the workspace on every step (x: 313 KB a step for the tutorial).
        roots.retain(|&r| r == loss || !matches!(m.graph.node(r).op, Op::Input(_)));
        let p = plan::plan(m, &roots);
        programs.push(("__train_step".to_string(), p.clone()));
        (programs.len() - 1, p, updates)
    });

    let workspaces: Vec<TokenStream> = programs.iter().enumerate().map(|(i, (_, p))| workspace(&ctx, i, p)).collect();
    let struct_def = struct_def(&ctx, programs.len());
    let fetch_fns: Vec<TokenStream> =
        m.fetches.iter().enumerate().map(|(i, f)| fetch_fn(&ctx, i, f, &programs[i].1)).collect();
    let train_fns = match &train {
        Some(t) => {
            let index = programs.iter().position(|p| p.0 == "__train").unwrap_or(0);
            let mut fns = train_fns(&ctx, index, t, fused.is_none());
            if let Some((i, p, updates)) = &fused {
                fns.extend(fused_train_step(&ctx, *i, p, updates));
            }
            fns
        }
        None => TokenStream::new(),
    };
    let common = common_fns(&ctx, &programs, train.as_ref());
    let grads_struct = grads_struct(&ctx);
    let import_fns = import::methods(m);
    let name = ctx.name;
    quote! {
        #struct_def
        #grads_struct
        #(#workspaces)*

        #[allow(clippy::all, clippy::pedantic, unused_variables, unused_mut, unused_parens, non_snake_case)]
        impl #name {
            #common
            #import_fns
            #(#fetch_fns)*
            #train_fns
        }

        impl ::core::default::Default for #name {
            fn default() -> Self {
                Self::new()
            }
        }
    }
}

fn struct_def(ctx: &Ctx, n_programs: usize) -> TokenStream {
    let m = ctx.m;
    let (name, state_ty) = (ctx.name, &ctx.state_ty);
    let attrs = without_derived_debug(&m.attrs);
    let vis = &m.vis;
    let fields = m.params.iter().map(|p| {
        let (pn, attrs, ty) = (&p.name, &p.attrs, array_ty(p.dims.len()));
        let kind = if p.frozen { "frozen (never updated)" } else { "trainable" };
        let doc = format!("Param `{}`: {:?}, {kind}.", pn, p.dims);
        let doc = if attrs.is_empty() { quote!(#[doc = #doc]) } else { quote!() };
        quote!(#(#attrs)* #doc pub #pn: #ty,)
    });
    let name_str = name.to_string();
    let pnames: Vec<&Ident> = m.params.iter().map(|p| &p.name).collect();
    let pstrs: Vec<String> = pnames.iter().map(|n| n.to_string()).collect();
    let ptrain: Vec<bool> = m.params.iter().map(|p| !p.frozen).collect();
    let k = ctx.k;
    // A fetch's workspaces are a pool shared by the threads calling it through `&self`;
    // a training function's is one workspace, behind `&mut self`.
    let n_fetches = m.fetches.len();
    let ws_fields = (0..n_programs).map(|i| {
        let f = format_ident!("ws{}", i);
        let ty = format_ident!("__Modelc{}Ws{}", name, i);
        if i < n_fetches {
            quote!(#f: ::modelc::__private::Pool<#ty, #k>,)
        } else {
            quote!(#f: ::core::option::Option<([usize; #k], #ty)>,)
        }
    });
    quote! {
        #(#attrs)*
        #vis struct #name {
            #(#fields)*
            __state: #state_ty,
        }

        #[doc(hidden)]
        #[derive(Clone, Debug)]
        #[allow(non_camel_case_types)]
        struct #state_ty {
            optimizer: ::core::option::Option<::modelc::__private::optim::Optimizer>,
            slots: ::std::vec::Vec<::std::vec::Vec<::std::vec::Vec<f32>>>,
            global_step: u64,
            /// Plain SGD's materialized weight gradients, one per update (see
            /// `sgd_guard`), sized on first use.
            gscratch: ::std::vec::Vec<::std::vec::Vec<f32>>,
            #(#ws_fields)*
        }

        /// The params' names and shapes, the optimizer and the global step (not the
        /// values: print a field for those).
        impl ::core::fmt::Debug for #name {
            fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
                ::modelc::__private::debug_model(
                    f,
                    #name_str,
                    &[#((#pstrs, self.#pnames.shape(), #ptrain)),*],
                    self.__state.optimizer.as_ref(),
                    self.__state.global_step,
                )
            }
        }

        /// Clones the params, the optimizer state and the global step (not the
        /// workspaces, which are rebuilt on first use).
        impl ::core::clone::Clone for #name {
            fn clone(&self) -> Self {
                Self::__clone_parts(self)
            }
        }
    }
}

/// The struct's attributes with `Debug` taken out of any `#[derive(..)]`: the model's
/// `Debug` is generated (compact: names and shapes, not the buffers), and a derived one
/// would conflict with it; `Clone` is generated too (it rebuilds the workspaces), so it
/// is taken out the same way. `#[derive(Debug, PartialEq)]` becomes `#[derive(PartialEq)]`.
fn without_derived_debug(attrs: &[syn::Attribute]) -> Vec<TokenStream> {
    use syn::punctuated::Punctuated;
    attrs
        .iter()
        .filter_map(|a| {
            if !a.path().is_ident("derive") {
                return Some(quote!(#a));
            }
            let Ok(paths) = a.parse_args_with(Punctuated::<syn::Path, syn::Token![,]>::parse_terminated) else {
                return Some(quote!(#a));
            };
            let generated = |p: &syn::Path| p.segments.last().is_some_and(|s| s.ident == "Debug" || s.ident == "Clone");
            let kept: Vec<&syn::Path> = paths.iter().filter(|p| !generated(p)).collect();
            if kept.is_empty() {
                None
            } else {
                Some(quote!(#[derive(#(#kept),*)]))
            }
        })
        .collect()
}

fn grads_struct(ctx: &Ctx) -> TokenStream {
    let m = ctx.m;
    let grads_ty = &ctx.grads_ty;
    let vis = &m.vis;
    let trainable = m.trainable();
    let fields = trainable.iter().map(|&p| {
        let p = &m.params[p];
        let (pn, ty) = (&p.name, array_ty(p.dims.len()));
        let doc = format!("The gradient of the loss with respect to `{pn}`.");
        quote!(#[doc = #doc] pub #pn: #ty,)
    });
    let zeros = trainable.iter().map(|&p| {
        let p = &m.params[p];
        let (pn, ty) = (&p.name, array_path(p.dims.len()));
        let dims = p.dims.iter().map(|&d| usize_lit(d));
        let shape = if p.dims.is_empty() { quote!(()) } else { quote!([#(#dims),*]) };
        quote!(#pn: #ty::zeros(#shape),)
    });
    let doc = format!("The gradients of the loss of [`{}`] for every trainable param.", ctx.name);
    let gname = grads_ty.to_string();
    let gfields: Vec<&Ident> = trainable.iter().map(|&p| &m.params[p].name).collect();
    let gstrs: Vec<String> = gfields.iter().map(|n| n.to_string()).collect();
    quote! {
        #[doc = #doc]
        #[derive(Clone, PartialEq)]
        #vis struct #grads_ty {
            #(#fields)*
        }

        /// The fields' names and shapes (not the values: print a field for those).
        impl ::core::fmt::Debug for #grads_ty {
            fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
                f.debug_struct(#gname)
                    #(.field(#gstrs, &::modelc::__private::DebugShape(self.#gfields.shape())))*
                    .finish()
            }
        }

        impl #grads_ty {
            /// Gradients of zero, of the params' shapes (a buffer for `compute_gradients_into`).
            pub fn zeros() -> Self {
                Self { #(#zeros)* }
            }
        }
    }
}

fn workspace(ctx: &Ctx, i: usize, p: &Program) -> TokenStream {
    let ty = format_ident!("__Modelc{}Ws{}", ctx.name, i);
    let fields = p.slot_shapes.iter().enumerate().map(|(k, shape)| {
        let (b, t) = (format_ident!("__s{}", k), array_ty(shape.rank()));
        quote!(#b: #t,)
    });
    let inits = p.slot_shapes.iter().enumerate().map(|(k, shape)| {
        let (b, t, s) = (format_ident!("__s{}", k), array_path(shape.rank()), shape_tokens(ctx.m, shape));
        quote!(#b: #t::zeros(#s),)
    });
    let bytes = p.slot_shapes.iter().map(|shape| numel_tokens(ctx.m, shape));
    let k = ctx.k;
    quote! {
        #[doc(hidden)]
        #[derive(Clone, Debug)]
        #[allow(non_camel_case_types)]
        struct #ty {
            #(#fields)*
        }

        #[allow(unused_variables, clippy::all)]
        impl #ty {
            fn new(__d: &[usize; #k]) -> Self {
                Self { #(#inits)* }
            }
            fn bytes(__d: &[usize; #k]) -> u64 {
                4u64.saturating_mul(0u64 #(.saturating_add(#bytes))*)
            }
        }
    }
}

/// `fn NAME(&mut self, x: ArrayView2<f32>, ...)` parameters for a program's inputs.
fn input_params(ctx: &Ctx, p: &Program) -> Vec<TokenStream> {
    p.inputs
        .iter()
        .map(|&i| {
            let inp = &ctx.m.inputs[i];
            let (n, t) = (&inp.name, view_ty(inp.shape.rank()));
            quote!(#n: #t)
        })
        .collect()
}

fn input_args(ctx: &Ctx, p: &Program) -> Vec<Ident> {
    p.inputs.iter().map(|&i| ctx.m.inputs[i].name.clone()).collect()
}

/// Validation of inputs and params: nothing has changed when this returns `Err`.
fn validate(ctx: &Ctx, p: &Program) -> TokenStream {
    validate_as(ctx, p, true)
}

/// [`validate`]; `fix_layout`: put a param replaced by a non-standard array back in
/// standard layout (needs `&mut self`; the `&self` fetches only check its shape).
fn validate_as(ctx: &Ctx, p: &Program, fix_layout: bool) -> TokenStream {
    let m = ctx.m;
    let k = ctx.k;
    let names = m.symbols.iter();
    let binds = p.inputs.iter().map(|&i| {
        let inp = &m.inputs[i];
        let n = &inp.name;
        let ns = n.to_string();
        let specs = inp.shape.0.iter().map(|d| match d {
            Dim::Static(s) => quote!(::modelc::__private::DimSpec::Static(#s)),
            Dim::Sym(s) => {
                let idx = m.symbols.iter().position(|x| x == s).unwrap_or(0);
                quote!(::modelc::__private::DimSpec::Sym(#idx))
            }
        });
        quote!(__b.bind(#ns, &[#(#specs),*], #n.shape())?;)
    });
    let params = p.params.iter().map(|&i| {
        let prm = &m.params[i];
        let (n, ns) = (&prm.name, prm.name.to_string());
        let dims = prm.dims.iter();
        if fix_layout {
            quote!(::modelc::__private::check_param(#ns, &mut self.#n, &[#(#dims),*])?;)
        } else {
            quote!(::modelc::__private::check_param_shape(#ns, &self.#n, &[#(#dims),*])?;)
        }
    });
    // A mean divides by its count, a product of dimensions: with a symbolic one bound to
    // 0 (a batch of 0) it would be NaN, so the call is an `Err` instead, before anything
    // runs. E.g. `loss l = mean(square(x - w));` with `x: [0, 3]`.
    // The same for a max or an argmax over a symbolic axis: nothing to pick from (it
    // would be -inf, or index 0). E.g. `loss l = max(x, axis = 0) * p;` with `x: [0]`.
    let g = &m.graph;
    let mut counted: Vec<(String, &'static str)> = Vec::new();
    let note = |s: &String, op: &'static str, counted: &mut Vec<(String, &'static str)>| {
        if !counted.iter().any(|(c, o)| c == s && *o == op) {
            counted.push((s.clone(), op));
        }
    };
    for id in g.cone(&p.roots) {
        let node = g.node(id);
        match &node.op {
            Op::DimProduct(syms) => {
                for s in syms {
                    note(s, "mean", &mut counted);
                }
            }
            Op::Max { axis, .. } | Op::Argmax { axis, .. } => {
                let op = if matches!(node.op, Op::Max { .. }) { "max" } else { "argmax" };
                if let Some(Dim::Sym(s)) = node.inputs.first().and_then(|&i| g.shape(i).0.get(*axis)) {
                    note(s, op, &mut counted);
                }
            }
            _ => {}
        }
    }
    let counts = if counted.is_empty() {
        TokenStream::new()
    } else {
        let what = p
            .roots
            .first()
            .and_then(|r| m.fetches.iter().find(|f| f.node == *r))
            .map_or_else(|| "this call".to_string(), |f| f.name.to_string());
        let pairs = counted.iter().map(|(s, op)| {
            let d = dim_tokens(m, &Dim::Sym(s.clone()));
            quote!((#s, #d, #op))
        });
        quote!(::modelc::__private::check_counts(#what, &[#(#pairs),*])?;)
    };
    quote! {
        let mut __b = ::modelc::__private::Binder::<#k>::new([#(#names),*]);
        #(#binds)*
        let __d: [usize; #k] = __b.values();
        #counts
        #(#params)*
    }
}

/// The scalar expression of operand `id` inside a fused loop.
fn scalar_operand(ctx: &Ctx, p: &Program, id: NodeId, externals: &[NodeId]) -> TokenStream {
    let g = &ctx.m.graph;
    let node = g.node(id);
    match &node.op {
        Op::Const(bits) => f32_tokens(f32::from_bits(*bits)),
        Op::DimProduct(syms) => {
            let ds = syms.iter().map(|s| dim_tokens(ctx.m, &Dim::Sym(s.clone())));
            quote!(((1usize #(* #ds)*) as f32))
        }
        _ if p.inlined.contains(&id) => {
            let args: Vec<TokenStream> = node.inputs.iter().map(|&i| scalar_operand(ctx, p, i, externals)).collect();
            node.op.scalar_expr(&args)
        }
        _ => {
            let pos = externals.iter().position(|&e| e == id).unwrap_or(0);
            let v = format_ident!("__v{}", pos);
            quote!(#v)
        }
    }
}

/// A reference (`&array`) to `id`, for `assign`.
fn producer(ctx: &Ctx, p: &Program, id: NodeId) -> TokenStream {
    let m = ctx.m;
    match &m.graph.node(id).op {
        Op::Input(i) => {
            let n = &m.inputs[*i].name;
            quote!(&#n)
        }
        Op::Param(i) => {
            let n = &m.params[*i].name;
            quote!(&self.#n)
        }
        _ => {
            let b = buf(p, id);
            quote!(&__ws.#b)
        }
    }
}

/// A read-only view of `id`, for kernels.
fn view(ctx: &Ctx, p: &Program, id: NodeId) -> TokenStream {
    let m = ctx.m;
    match &m.graph.node(id).op {
        Op::Input(i) => {
            let n = &m.inputs[*i].name;
            quote!(#n.view())
        }
        Op::Param(i) => {
            let n = &m.params[*i].name;
            quote!(self.#n.view())
        }
        _ => {
            let b = buf(p, id);
            quote!(__ws.#b.view())
        }
    }
}

/// The statements computing a program into its workspace `__ws`.
fn compute(ctx: &Ctx, p: &Program) -> TokenStream {
    compute_steps(ctx, p).into_iter().collect()
}

/// The statements of each step of `p`, in order.
fn compute_steps(ctx: &Ctx, p: &Program) -> Vec<TokenStream> {
    let g = &ctx.m.graph;
    let mut out = Vec::with_capacity(p.steps.len());
    for (id, step) in &p.steps {
        let b = buf(p, *id);
        let node = g.node(*id);
        let stmt = match step {
            Step::Materialize => match &node.op {
                Op::Const(_) | Op::DimProduct(_) => {
                    let v = scalar_operand(ctx, p, *id, &[]);
                    quote!(__ws.#b.fill(#v);)
                }
                _ => {
                    let src = producer(ctx, p, *id);
                    quote!(__ws.#b.assign(#src);)
                }
            },
            Step::Kernel => {
                let args: Vec<TokenStream> = node.inputs.iter().map(|&i| view(ctx, p, i)).collect();
                node.op.kernel_call(&args, &quote!(__ws.#b.view_mut()))
            }
            Step::XentWithGrad(grad) => {
                let gb = buf(p, *grad);
                let gn = g.node(*grad);
                let (z, y, adj) = (view(ctx, p, gn.inputs[0]), view(ctx, p, gn.inputs[1]), view(ctx, p, gn.inputs[2]));
                quote! {
                    ::modelc::__private::kernels::softmax_xent_with_grad(
                        #z.into_dyn(), #y.into_dyn(), #adj.into_dyn(),
                        __ws.#b.view_mut().into_dyn(), __ws.#gb.view_mut().into_dyn(),
                    );
                }
            }
            Step::MatMulThen(product) => {
                let members = group_members(g, p, *id);
                let Op::MatMul { ta, tb } = g.node(*product).op else {
                    unreachable!("the planner pairs epilogues with matrix products only")
                };
                let pn = g.node(*product);
                let (a, bv) = (view(ctx, p, pn.inputs[0]), view(ctx, p, pn.inputs[1]));
                if let Some((bias, relu, mask)) = kernel_act(g, &members, *id, *product) {
                    let some = |v: Option<NodeId>| match v {
                        Some(v) => {
                            let v = view(ctx, p, v);
                            quote!(::core::option::Option::Some(#v))
                        }
                        None => quote!(::core::option::Option::None),
                    };
                    let (bias, mask) = (some(bias), some(mask));
                    quote! {
                        ::modelc::__private::kernels::matmul_act(
                            #a, #ta, #bv, #tb, __ws.#b.view_mut(),
                            ::modelc::__private::kernels::Act { bias: #bias, relu: #relu, mask: #mask },
                        );
                    }
                } else {
                    let externals = plan::external_operands(g, &members);
                    let expr = scalar_operand_root(ctx, p, *id, &externals);
                    let mine = externals.iter().position(|e| e == product).unwrap_or(0);
                    let mine = format_ident!("__v{}", mine);
                    let (others, vars): (Vec<TokenStream>, Vec<proc_macro2::Ident>) = externals
                        .iter()
                        .enumerate()
                        .filter(|(_, e)| *e != product)
                        .map(|(i, &e)| (view(ctx, p, e), format_ident!("__v{}", i)))
                        .unzip();
                    quote! {
                        let __full = __ws.#b.dim();
                        ::modelc::__private::kernels::matmul_then(
                            #a, #ta, #bv, #tb, __ws.#b.view_mut(),
                            &|__blk: ::modelc::ndarray::ArrayViewMut2<'_, f32>, __i0: usize, __j0: usize| {
                                let (__r, __c) = __blk.dim();
                                ::modelc::__private::kernels::map(
                                    __blk.into_dyn(),
                                    [#(#others
                                        .broadcast(__full)
                                        .expect("shapes checked at compile time")
                                        .slice_move(::modelc::ndarray::s![__i0..__i0 + __r, __j0..__j0 + __c])
                                        .into_dyn()),*],
                                    #[inline(always)]
                                    |#mine, [#(#vars),*]| #expr,
                                );
                            },
                        );
                    }
                }
            }
            Step::Fused => {
                let members = group_members(g, p, *id);
                let externals = plan::external_operands(g, &members);
                let expr = scalar_operand_root(ctx, p, *id, &externals);
                if externals.is_empty() {
                    quote!(__ws.#b.fill(#expr);)
                } else {
                    let ins = externals.iter().map(|&e| view(ctx, p, e));
                    let vars = (0..externals.len()).map(|i| format_ident!("__v{}", i));
                    quote! {
                        ::modelc::__private::kernels::map(
                            __ws.#b.view_mut().into_dyn(),
                            [#(#ins.into_dyn()),*],
                            #[inline(always)]
                            |_, [#(#vars),*]| #expr,
                        );
                    }
                }
            }
        };
        out.push(stmt);
    }
    out
}

/// An epilogue the kernels apply themselves (`kernels::matmul_act`), as `(bias, relu,
/// mask)`: `relu(p + bias)`, `p + bias` or `relu(p)`, with `bias` a vector along the
/// product `p`'s rows (a layer's bias add and activation), or `p * step(mask)`, with
/// `mask` of `p`'s shape (relu's derivative from relu's output). Any other group runs
/// as a closure over finished blocks.
fn kernel_act(
    g: &crate::ir::Graph,
    members: &std::collections::BTreeSet<NodeId>,
    root: NodeId,
    product: NodeId,
) -> Option<(Option<NodeId>, bool, Option<NodeId>)> {
    use crate::ops::elementwise::{Binary, Unary};
    let dims = g.node(product).shape.dims();
    let (mut node, mut relu) = (root, false);
    if g.node(node).op == Op::Unary(Unary::Relu) {
        (node, relu) = (g.node(node).inputs[0], true);
    }
    if node == product {
        return Some((None, relu, None));
    }
    let n = g.node(node);
    if !members.contains(&node) || n.inputs.len() != 2 {
        return None;
    }
    let other = match (n.inputs[0] == product, n.inputs[1] == product) {
        (true, false) => n.inputs[1],
        (false, true) => n.inputs[0],
        _ => return None,
    };
    let o = g.node(other);
    match n.op {
        Op::Binary(Binary::Add) if !members.contains(&other) && o.shape.dims() == &dims[1..] => {
            Some((Some(other), relu, None))
        }
        Op::Binary(Binary::Mul) if !relu && members.contains(&other) && o.op == Op::Unary(Unary::Step) => {
            let h = o.inputs[0];
            (!members.contains(&h) && g.node(h).shape.dims() == dims).then_some((None, false, Some(h)))
        }
        _ => None,
    }
}

fn scalar_operand_root(ctx: &Ctx, p: &Program, id: NodeId, externals: &[NodeId]) -> TokenStream {
    let node = ctx.m.graph.node(id);
    let args: Vec<TokenStream> = node.inputs.iter().map(|&i| scalar_operand(ctx, p, i, externals)).collect();
    node.op.scalar_expr(&args)
}

/// The prologue of every function computing program `i`: validate, then get the
/// workspace for these dimensions (allocated once per distinct set of dimensions).
fn prologue(ctx: &Ctx, i: usize, p: &Program) -> TokenStream {
    let validate = validate(ctx, p);
    let f = format_ident!("ws{}", i);
    let ty = format_ident!("__Modelc{}Ws{}", ctx.name, i);
    quote! {
        #validate
        let __ws = ::modelc::__private::workspace(&mut self.__state.#f, __d, #ty::new);
    }
}

fn fetch_fn(ctx: &Ctx, i: usize, f: &crate::model::Fetch, p: &Program) -> TokenStream {
    let g = &ctx.m.graph;
    let (name, attrs) = (&f.name, &f.attrs);
    let params = input_params(ctx, p);
    let validate = validate_as(ctx, p, false);
    let ws_field = format_ident!("ws{}", i);
    let ws_ty = format_ident!("__Modelc{}Ws{}", ctx.name, i);
    let body = compute(ctx, p);
    let b = buf(p, f.node);
    let shape = g.shape(f.node);
    let (ret_ty, ret) = if f.kind == NodeKind::Output {
        (array_ty(shape.rank()), quote!(__ws.#b.clone()))
    } else {
        (quote!(f32), quote!(__ws.#b[()]))
    };
    let inputs: Vec<String> = p.inputs.iter().map(|&i| format!("`{}`", ctx.m.inputs[i].name)).collect();
    let doc = format!(
        "Computes {} `{name}` (shape {shape}) from {}; only the ops it depends on run.\n\n\
         Takes `&self`: a model behind an `Arc` answers many threads at once, each call with a \
         workspace of its own from the model's pool (allocated once per concurrent caller and batch size).\n\n\
         Returns `Err(Error::Shape {{ .. }})` if an input does not have its declared shape.",
        match f.kind {
            NodeKind::Output => "output",
            NodeKind::Loss => "the loss",
            NodeKind::Metric => "metric",
            NodeKind::Let => "node",
        },
        if inputs.is_empty() { "the params".to_string() } else { inputs.join(", ") }
    );
    let doc = if attrs.is_empty() { quote!(#[doc = #doc]) } else { quote!(#(#attrs)* #[doc = ""] #[doc = #doc]) };
    quote! {
        #doc
        pub fn #name(&self, #(#params),*) -> ::core::result::Result<#ret_ty, ::modelc::Error> {
            #validate
            let mut __held = self.__state.#ws_field.take(__d, #ws_ty::new);
            let __ws = &mut __held;
            #body
            let __ret = #ret;
            self.__state.#ws_field.put(__d, __held);
            ::core::result::Result::Ok(__ret)
        }
    }
}

/// How a plain-SGD `train_step` updates one param without materializing its gradient.
#[derive(Clone, Copy, Debug)]
enum Update {
    /// `w += -lr * op(a) op(b)`: one gemm call accumulating into the param.
    MatMul { ta: bool, tb: bool, a: NodeId, b: NodeId },
    /// `b += -lr * sum_to(src)`: the bias update fused with its reduction.
    SumTo { src: NodeId },
    /// `p -= lr * grad`, from the gradient's buffer.
    Plain { grad: NodeId },
}

/// For plain SGD (no clipping, no weight decay), how each trainable param is updated.
/// A product or reduction reading a param is not fused, because params are updated one
/// after the other and must all be read before any changes.
fn sgd_updates(c: &Compiled) -> Option<Vec<(usize, Update)>> {
    let m = &c.model;
    let o = m.optimizer.as_ref()?;
    if o.kind != OptimizerKind::Sgd || o.clip_norm.is_some() || o.weight_decay != 0.0 {
        return None;
    }
    let g = &m.graph;
    let not_param = |id: NodeId| !matches!(g.node(id).op, Op::Param(_));
    Some(
        c.grads
            .iter()
            .map(|&(p, grad)| {
                let node = g.node(grad);
                let update = match node.op {
                    Op::MatMul { ta, tb } if node.inputs.iter().all(|&i| not_param(i)) => {
                        Update::MatMul { ta, tb, a: node.inputs[0], b: node.inputs[1] }
                    }
                    Op::SumTo(_) if not_param(node.inputs[0]) => Update::SumTo { src: node.inputs[0] },
                    _ => Update::Plain { grad },
                };
                (p, update)
            })
            .collect(),
    )
}

/// `train_step` for plain SGD: forward and backward into its own workspace, each update
/// fused with its gradient's last op and run as early as it may (see [`update_order`]).
fn fused_train_step(ctx: &Ctx, i: usize, p: &Program, updates: &[(usize, Update)]) -> TokenStream {
    let m = ctx.m;
    let params = input_params(ctx, p);
    let prologue = prologue(ctx, i, p);
    let lb = buf(p, m.loss().map_or(0, |l| l.node));
    let k = quote!(::modelc::__private::kernels);
    let update = |(param, u): &(usize, Update)| {
        let n = &m.params[*param].name;
        match *u {
            Update::MatMul { ta, tb, a, b } => {
                let (a, b) = (view(ctx, p, a), view(ctx, p, b));
                let j = updates.iter().position(|u| u.0 == *param).unwrap_or(0);
                let mat = format_ident!("__mat{}", j);
                quote! {
                    if #mat {
                        // The gradient was computed and checked by the guard.
                        let __g = ::modelc::ndarray::ArrayViewD::from_shape(
                            ::modelc::ndarray::IxDyn(self.#n.shape()),
                            &self.__state.gscratch[#j][..],
                        )
                        .expect("sized by the guard");
                        #k::map(self.#n.view_mut().into_dyn(), [__g], #[inline(always)] |__p, [__g]| __p - __lr * __g);
                    } else {
                        #k::gemm_acc(-__lr, #a, #ta, #b, #tb, self.#n.view_mut());
                    }
                }
            }
            Update::SumTo { src } => {
                let s = view(ctx, p, src);
                quote!(#k::sum_to_acc(-__lr, #s.into_dyn(), self.#n.view_mut().into_dyn());)
            }
            Update::Plain { grad } => {
                let g = view(ctx, p, grad);
                quote! {
                    #k::map(
                        self.#n.view_mut().into_dyn(),
                        [#g.into_dyn()],
                        #[inline(always)]
                        |__p, [__g]| __p - __lr * __g,
                    );
                }
            }
        }
    };
    // Every update runs after the whole forward and backward pass, behind the guard: an
    // update must not start before every other one is known to be finite (see
    // `sgd_guard`). They keep `update_order`'s order: the most recently read param first.
    let order = update_order(&m.graph, p, updates);
    let body = compute_steps(ctx, p);
    let applied: Vec<TokenStream> = order.iter().map(|&(_, i)| update(&updates[i])).collect();
    let guard = sgd_guard(ctx, p, updates);
    let args = input_args(ctx, p);
    quote! {
        /// One step of training (TensorFlow's `minimize`): computes the loss and its
        /// gradients, applies the optimizer, and returns the loss *before* the update.
        ///
        /// For plain SGD each update is fused into its gradient's last operation (a
        /// weight gradient `op(a) op(b)` is accumulated straight into the weight), so no
        /// gradient is materialized.
        ///
        /// Returns `Err`, changing nothing, if an input does not have its declared shape.
        pub fn train_step(&mut self, #(#params),*) -> ::core::result::Result<f32, ::modelc::Error> {
            #prologue
            let __lr = match self.__state.optimizer.as_ref() {
                ::core::option::Option::Some(__o) => __o.learning_rate,
                ::core::option::Option::None => 0.0,
            };
            #(#body)*
            #guard
            if __risky {
                // Finite operands large enough that a fused update might overflow: the
                // exact path computes the gradients and checks them before any change.
                return self.__train_step_exact(#(#args),*);
            }
            #(#applied)*
            self.__state.global_step += 1;
            ::core::result::Result::Ok(__ws.#lb[()])
        }
    }
}

/// The guard of the fused SGD updates: the largest `|v|` of each distinct operand (one
/// vectorized pass each; an input view is read in place), then `sgd_guard`'s bound per
/// param. Sets `__risky`, or returns `Err(NonFinite)` before anything was written.
fn sgd_guard(ctx: &Ctx, p: &Program, updates: &[(usize, Update)]) -> TokenStream {
    let m = ctx.m;
    let mut operands: Vec<NodeId> = Vec::new();
    let mut note = |id: NodeId| {
        if !operands.contains(&id) {
            operands.push(id);
        }
    };
    for (_, u) in updates {
        match *u {
            Update::MatMul { a, b, .. } => {
                note(a);
                note(b);
            }
            Update::SumTo { src } => note(src),
            Update::Plain { grad } => note(grad),
        }
    }
    let max_of = |id: NodeId| format_ident!("__max{}", operands.iter().position(|&o| o == id).unwrap_or(0));
    // A weight gradient whose operands are larger than twice the weight (the tutorial's
    // `x^T dz`: x is 78,400 floats, w 7,840) is cheaper to compute into scratch and check
    // there than to bound from its operands: the check then reads 2 x 31 KB instead of
    // 313 KB. Decided per call, from the sizes.
    let decide = updates.iter().enumerate().map(|(j, (param, u))| {
        let mat = format_ident!("__mat{}", j);
        let n = &m.params[*param].name;
        match *u {
            Update::MatMul { a, b, .. } => {
                let (av, bv) = (view(ctx, p, a), view(ctx, p, b));
                quote!(let #mat = #av.len() + #bv.len() > 2 * self.#n.len();)
            }
            _ => quote!(let #mat = false;),
        }
    });
    let decide: Vec<TokenStream> = decide.collect();
    let maxes = operands.iter().map(|&id| {
        let v = view(ctx, p, id);
        let n = max_of(id);
        // Needed unless every update reading it is materialized.
        let users = updates.iter().enumerate().filter_map(|(j, (_, u))| {
            let reads = match *u {
                Update::MatMul { a, b, .. } => a == id || b == id,
                Update::SumTo { src } => src == id,
                Update::Plain { grad } => grad == id,
            };
            let mat = format_ident!("__mat{}", j);
            reads.then(|| quote!(!#mat))
        });
        quote!(let #n = if false #(|| #users)* { ::modelc::__private::max_abs(#v) } else { 0.0 };)
    });
    let materialize = updates.iter().enumerate().filter_map(|(j, (param, u))| {
        let Update::MatMul { ta, tb, a, b } = *u else { return None };
        let (av, bv) = (view(ctx, p, a), view(ctx, p, b));
        let mat = format_ident!("__mat{}", j);
        let gmax = format_ident!("__gmax{}", j);
        let n = &m.params[*param].name;
        Some(quote! {
            let #gmax = if #mat {
                let __g = &mut self.__state.gscratch[#j];
                __g.resize(self.#n.len(), 0.0);
                ::modelc::__private::kernels::matmul_act(
                    #av, #ta, #bv, #tb,
                    ::modelc::ndarray::ArrayViewMut2::from_shape(self.#n.raw_dim(), &mut __g[..]).expect("sized just now"),
                    ::modelc::__private::kernels::Act { bias: ::core::option::Option::None, relu: false, mask: ::core::option::Option::None },
                );
                ::modelc::__private::max_abs_slice(__g)
            } else {
                0.0
            };
        })
    });
    let materialize: Vec<TokenStream> = materialize.collect();
    let n_updates = updates.len();
    let bounds = updates.iter().enumerate().map(|(j, (param, u))| {
        let name = m.params[*param].name.to_string();
        let numel: usize = m.params[*param].dims.iter().product();
        let numel = numel.max(1) as f64;
        match *u {
            Update::MatMul { ta, a, b, .. } => {
                let (av, bv) = (view(ctx, p, a), view(ctx, p, b));
                let axis = usize::from(!ta);
                let (ma, mb) = (max_of(a), max_of(b));
                let (mat, gmax) = (format_ident!("__mat{}", j), format_ident!("__gmax{}", j));
                // Materialized: the gradient's own largest |g| (count 1). Else the bound
                // from the operands; an empty operand makes the product 0 (or empty).
                quote! {
                    if #mat {
                        (#name, 1.0, [#gmax, 1.0])
                    } else {
                        (#name, if #av.is_empty() || #bv.is_empty() { 0.0 } else { #av.shape()[#axis] as f64 }, [#ma, #mb])
                    }
                }
            }
            Update::SumTo { src } => {
                let sv = view(ctx, p, src);
                let ms = max_of(src);
                quote!((#name, #sv.len() as f64 / #numel, [#ms, 1.0]))
            }
            Update::Plain { grad } => {
                let gv = view(ctx, p, grad);
                let mg = max_of(grad);
                quote!((#name, if #gv.is_empty() { 0.0 } else { 1.0 }, [#mg, 1.0]))
            }
        }
    });
    quote! {
        if self.__state.gscratch.len() != #n_updates {
            self.__state.gscratch.resize_with(#n_updates, ::std::vec::Vec::new);
        }
        #(#decide)*
        #(#maxes)*
        #(#materialize)*
        let __risky = ::modelc::__private::sgd_guard(__lr, &[#(#bounds),*])?;
    }
}

/// Where each update runs: right after the last step that reads its param (the update
/// changes it in place) and the steps that compute its operands (`None`: before the
/// first step). The operands are roots of the program, whose buffers no later step
/// reuses, so they still hold their values there. Run that early, an update finds its
/// operands in cache: M3's `w3 += -lr h2^T dz3` took 71 us after every other update,
/// 31 us right after the `dz3 w3^T` that last reads `w3`. Updates that run after the
/// same step run most recently read param first, as a hand-written backward pass does:
/// after `dz2 w2^T` (which reads `w2`), `w2`'s update, which rewrites `w2` while it is
/// still in cache, before `w1`'s, last read in the forward pass.
fn update_order(g: &crate::ir::Graph, p: &Program, updates: &[(usize, Update)]) -> Vec<(Option<usize>, usize)> {
    let reads: Vec<Vec<NodeId>> = (0..p.steps.len()).map(|s| plan::step_reads(g, p, s)).collect();
    let writes: Vec<Vec<NodeId>> = (0..p.steps.len()).map(|s| plan::step_writes(p, s)).collect();
    let last = |f: &dyn Fn(usize) -> bool| (0..p.steps.len()).rev().find(|&s| f(s));
    let mut order: Vec<(Option<usize>, Option<usize>, usize)> = updates
        .iter()
        .enumerate()
        .map(|(i, &(param, u))| {
            let operands = match u {
                Update::MatMul { a, b, .. } => vec![a, b],
                Update::SumTo { src } => vec![src],
                Update::Plain { grad } => vec![grad],
            };
            let read = last(&|s| reads[s].iter().any(|&n| g.node(n).op == Op::Param(param)));
            let computed = last(&|s| writes[s].iter().any(|n| operands.contains(n)));
            (read.max(computed), read, i)
        })
        .collect();
    // By slot, then most recently read first, then declaration order.
    order.sort_by(|x, y| x.0.cmp(&y.0).then(y.1.cmp(&x.1)).then(x.2.cmp(&y.2)));
    order.into_iter().map(|(after, _, i)| (after, i)).collect()
}

fn train_fns(ctx: &Ctx, i: usize, p: &Program, with_train_step: bool) -> TokenStream {
    let m = ctx.m;
    let c = ctx.c;
    let grads_ty = &ctx.grads_ty;
    let params = input_params(ctx, p);
    let args = input_args(ctx, p);
    let prologue = prologue(ctx, i, p);
    let body = compute(ctx, p);
    let loss = m.loss().map(|l| l.node).unwrap_or(0);
    let loss_name = m.loss().map(|l| l.name.clone()).unwrap_or_else(|| format_ident!("loss"));
    let lb = buf(p, loss);
    let ws = format_ident!("ws{}", i);
    let trainable: Vec<usize> = c.grads.iter().map(|g| g.0).collect();
    let tnames: Vec<&Ident> = trainable.iter().map(|&t| &m.params[t].name).collect();
    let tstrs: Vec<String> = tnames.iter().map(|n| n.to_string()).collect();
    let gbufs: Vec<Ident> = c.grads.iter().map(|g| buf(p, g.1)).collect();
    let tdims: Vec<TokenStream> = trainable
        .iter()
        .map(|&t| {
            let d = m.params[t].dims.iter();
            quote!(&[#(#d),*])
        })
        .collect();
    let probe_blocks = trainable.iter().zip(&gbufs).map(|(&t, _)| {
        let n = &m.params[t].name;
        let ns = n.to_string();
        quote! {
            {
                let mut __probe = ::modelc::__private::GradProbe::new(#ns, self.#n.len());
                for __i in __probe.indices() {
                    let __orig = ::modelc::__private::slice_mut(&mut self.#n)[__i];
                    let __h = __probe.step(__orig);
                    ::modelc::__private::slice_mut(&mut self.#n)[__i] = __orig + __h;
                    let __lp = self.#loss_name(#(#args),*);
                    ::modelc::__private::slice_mut(&mut self.#n)[__i] = __orig - __h;
                    let __lm = self.#loss_name(#(#args),*);
                    ::modelc::__private::slice_mut(&mut self.#n)[__i] = __orig;
                    __probe.record(::modelc::__private::slice(&__g.#n)[__i], __lp?, __lm?, __h);
                }
                __params.push(__probe.finish());
            }
        }
    });
    let train_step = if with_train_step {
        quote! {
            /// One step of training (TensorFlow's `minimize`): computes the loss and its
            /// gradients, applies the optimizer, and returns the loss *before* the update.
            ///
            /// Returns `Err`, changing nothing, if an input does not have its declared shape.
            pub fn train_step(&mut self, #(#params),*) -> ::core::result::Result<f32, ::modelc::Error> {
                self.__train_step_exact(#(#args),*)
            }
        }
    } else {
        TokenStream::new()
    };
    quote! {
        /// Runs the forward and backward programs into the training workspace; returns
        /// the loss.
        fn __forward_backward(&mut self, #(#params),*) -> ::core::result::Result<f32, ::modelc::Error> {
            #prologue
            #body
            ::core::result::Result::Ok(__ws.#lb[()])
        }

        /// Applies the optimizer to the gradients in the training workspace; `Err`,
        /// changing nothing, if one is not finite.
        fn __update_from_workspace(&mut self) -> ::core::result::Result<(), ::modelc::Error> {
            let __ws = match self.__state.#ws.as_ref() {
                ::core::option::Option::Some((_, __w)) => __w,
                ::core::option::Option::None => return ::core::result::Result::Ok(()),
            };
            let __opt = match self.__state.optimizer.as_ref() {
                ::core::option::Option::Some(__o) => __o,
                ::core::option::Option::None => return ::core::result::Result::Ok(()),
            };
            ::modelc::__private::apply_updates(
                __opt,
                &mut self.__state.global_step,
                &mut self.__state.slots,
                &mut [#(::modelc::__private::slice_mut(&mut self.#tnames)),*],
                &[#(::modelc::__private::slice(&__ws.#gbufs)),*],
                &[#(#tstrs),*],
            )
        }

        /// `train_step` through materialized gradients: forward and backward, then the
        /// optimizer, which checks every gradient before it changes anything.
        fn __train_step_exact(&mut self, #(#params),*) -> ::core::result::Result<f32, ::modelc::Error> {
            let __loss = self.__forward_backward(#(#args),*)?;
            self.__update_from_workspace()?;
            ::core::result::Result::Ok(__loss)
        }

        #train_step

        /// The loss and its gradient for every trainable param (the first half of
        /// TensorFlow's `minimize`). Allocates the returned gradients; see
        /// [`Self::compute_gradients_into`] for the allocation-free form.
        pub fn compute_gradients(&mut self, #(#params),*) -> ::core::result::Result<(f32, #grads_ty), ::modelc::Error> {
            let __loss = self.__forward_backward(#(#args),*)?;
            let __ws = match self.__state.#ws.as_ref() {
                ::core::option::Option::Some((_, __w)) => __w,
                ::core::option::Option::None => unreachable!("the workspace was just filled"),
            };
            ::core::result::Result::Ok((__loss, #grads_ty { #(#tnames: __ws.#gbufs.clone(),)* }))
        }

        /// Like [`Self::compute_gradients`], writing into `gradients` (no allocation).
        pub fn compute_gradients_into(&mut self, #(#params,)* gradients: &mut #grads_ty) -> ::core::result::Result<f32, ::modelc::Error> {
            ::modelc::__private::check_gradient_shapes(&[#((#tstrs, gradients.#tnames.shape(), #tdims)),*])?;
            let __loss = self.__forward_backward(#(#args),*)?;
            let __ws = match self.__state.#ws.as_ref() {
                ::core::option::Option::Some((_, __w)) => __w,
                ::core::option::Option::None => unreachable!("the workspace was just filled"),
            };
            #(gradients.#tnames.assign(&__ws.#gbufs);)*
            ::core::result::Result::Ok(__loss)
        }

        /// Applies the optimizer to `gradients` (the second half of TensorFlow's
        /// `minimize`) and increments the global step.
        ///
        /// Returns `Err`, changing nothing (params, optimizer slots, global step), if a
        /// gradient does not have its param's shape (`Error::GradientShape`, listing
        /// every field that differs) or holds a NaN or an infinity (`Error::NonFinite`).
        pub fn apply_gradients(&mut self, gradients: &#grads_ty) -> ::core::result::Result<(), ::modelc::Error> {
            ::modelc::__private::check_gradient_shapes(&[#((#tstrs, gradients.#tnames.shape(), #tdims)),*])?;
            #(let #tnames = gradients.#tnames.as_standard_layout();)*
            let __opt = match self.__state.optimizer.as_ref() {
                ::core::option::Option::Some(__o) => __o,
                ::core::option::Option::None => return ::core::result::Result::Ok(()),
            };
            ::modelc::__private::apply_updates(
                __opt,
                &mut self.__state.global_step,
                &mut self.__state.slots,
                &mut [#(::modelc::__private::slice_mut(&mut self.#tnames)),*],
                &[#(::modelc::__private::slice(&#tnames)),*],
                &[#(#tstrs),*],
            )
        }

        /// Compares the symbolic gradient of every trainable param with central finite
        /// differences of the loss (probing a bounded number of scalars per param).
        pub fn check_gradients(&mut self, #(#params),*) -> ::core::result::Result<::modelc::GradientCheck, ::modelc::Error> {
            let (__loss, __g) = self.compute_gradients(#(#args),*)?;
            let mut __params = ::std::vec::Vec::new();
            #(#probe_blocks)*
            ::core::result::Result::Ok(::modelc::GradientCheck { loss: __loss, params: __params })
        }

        /// The learning rate the optimizer uses now.
        pub fn learning_rate(&self) -> f32 {
            self.__state.optimizer.as_ref().map_or(0.0, |o| o.learning_rate)
        }

        /// Sets the learning rate for the next updates (e.g. from a schedule).
        pub fn set_learning_rate(&mut self, learning_rate: f32) {
            if let ::core::option::Option::Some(o) = self.__state.optimizer.as_mut() {
                o.learning_rate = learning_rate;
            }
        }
    }
}

fn init_tokens(init: InitSpec) -> TokenStream {
    let i = quote!(::modelc::__private::init::Init);
    match init {
        InitSpec::Zeros => quote!(#i::Zeros),
        InitSpec::Ones => quote!(#i::Ones),
        InitSpec::Constant(v) => {
            let v = f32_tokens(v);
            quote!(#i::Constant(#v))
        }
        InitSpec::Uniform(lo, hi) => {
            let (lo, hi) = (f32_tokens(lo), f32_tokens(hi));
            quote!(#i::Uniform { low: #lo, high: #hi })
        }
        InitSpec::Normal(mean, std) => {
            let (mean, std) = (f32_tokens(mean), f32_tokens(std));
            quote!(#i::Normal { mean: #mean, std: #std })
        }
        InitSpec::TruncatedNormal(mean, std) => {
            let (mean, std) = (f32_tokens(mean), f32_tokens(std));
            quote!(#i::TruncatedNormal { mean: #mean, std: #std })
        }
        InitSpec::GlorotUniform => quote!(#i::GlorotUniform),
        InitSpec::GlorotNormal => quote!(#i::GlorotNormal),
        InitSpec::HeNormal => quote!(#i::HeNormal),
    }
}

fn optimizer_tokens(m: &Model) -> TokenStream {
    let Some(o) = &m.optimizer else { return quote!(::core::option::Option::None) };
    let k = quote!(::modelc::__private::optim::OptimizerKind);
    let f = f32_tokens;
    let kind = match o.kind {
        OptimizerKind::Sgd => quote!(#k::Sgd),
        OptimizerKind::Momentum { momentum, nesterov } => {
            let mo = f(momentum);
            quote!(#k::Momentum { momentum: #mo, nesterov: #nesterov })
        }
        OptimizerKind::Adam { beta1, beta2, epsilon } => {
            let (b1, b2, e) = (f(beta1), f(beta2), f(epsilon));
            quote!(#k::Adam { beta1: #b1, beta2: #b2, epsilon: #e })
        }
        OptimizerKind::RmsProp { rho, epsilon, momentum, centered } => {
            let (r, e, mo) = (f(rho), f(epsilon), f(momentum));
            quote!(#k::RmsProp { rho: #r, epsilon: #e, momentum: #mo, centered: #centered })
        }
        OptimizerKind::Adagrad { initial_accumulator_value, epsilon } => {
            let (a, e) = (f(initial_accumulator_value), f(epsilon));
            quote!(#k::Adagrad { initial_accumulator_value: #a, epsilon: #e })
        }
    };
    let lr = f(o.learning_rate);
    let clip = match o.clip_norm {
        Some(c) => {
            let c = f(c);
            quote!(::core::option::Option::Some(#c))
        }
        None => quote!(::core::option::Option::None),
    };
    let wd = f(o.weight_decay);
    quote! {
        ::core::option::Option::Some(::modelc::__private::optim::Optimizer {
            kind: #kind,
            learning_rate: #lr,
            clip_norm: #clip,
            weight_decay: #wd,
        })
    }
}

fn common_fns(ctx: &Ctx, programs: &[(String, Program)], train: Option<&Program>) -> TokenStream {
    let m = ctx.m;
    let c = ctx.c;
    let name_str = ctx.name.to_string();
    let state_ty = &ctx.state_ty;
    let k = ctx.k;
    let pnames: Vec<&Ident> = m.params.iter().map(|p| &p.name).collect();
    let pstrs: Vec<String> = pnames.iter().map(|n| n.to_string()).collect();
    let inits = m.params.iter().map(|p| {
        let (n, ns) = (&p.name, p.name.to_string());
        let dims = p.dims.iter().map(|&d| usize_lit(d));
        let shape = if p.dims.is_empty() { quote!(()) } else { quote!([#(#dims),*]) };
        let init = init_tokens(p.init);
        quote!(#n: ::modelc::__private::init_param(#init, #shape, seed, #ns),)
    });
    let trainable: Vec<usize> = c.grads.iter().map(|g| g.0).collect();
    let tnames: Vec<&Ident> = trainable.iter().map(|&t| &m.params[t].name).collect();
    let tstrs: Vec<String> = tnames.iter().map(|n| n.to_string()).collect();
    let tdims: Vec<Vec<usize>> = trainable.iter().map(|&t| m.params[t].dims.clone()).collect();
    let tlens: Vec<usize> = tdims.iter().map(|d| d.iter().product()).collect();
    let tdims_tok: Vec<TokenStream> = tdims
        .iter()
        .map(|d| {
            let d = d.iter();
            quote!(&[#(#d),*][..])
        })
        .collect();
    // Each param's size fits (lower.rs bounds it by MAX_ELEMENTS); their sum saturates.
    let parameters: usize =
        m.params.iter().filter(|p| !p.frozen).map(|p| p.dims.iter().product::<usize>()).fold(0, usize::saturating_add);
    let n_trainable = trainable.len();
    let slot_scalars = (parameters as u64).saturating_mul(m.optimizer.as_ref().map_or(0, |o| slot_count(o.kind)));
    let all_dims: Vec<Vec<usize>> = m.params.iter().map(|p| p.dims.clone()).collect();
    let all_dims_tok: Vec<TokenStream> = all_dims
        .iter()
        .map(|d| {
            let d = d.iter();
            quote!(&[#(#d),*])
        })
        .collect();
    let ptrain: Vec<bool> = m.params.iter().map(|p| !p.frozen).collect();
    let optimizer = optimizer_tokens(m);
    let ws_none = (0..programs.len()).map(|i| {
        let f = format_ident!("ws{}", i);
        if i < m.fetches.len() {
            quote!(#f: ::modelc::__private::Pool::new(),)
        } else {
            quote!(#f: ::core::option::Option::None,)
        }
    });
    let ws_none2 = ws_none.clone();
    let explain_text = explain::explain(c);
    let dot_text = explain::dot(c);
    let sym_args: Vec<Ident> = m.symbols.iter().map(|s| format_ident!("{}", s)).collect();
    let fetch_costs = m.fetches.iter().zip(programs).map(|(f, (_, p))| {
        let n = f.name.to_string();
        let flops = program_flops(ctx, p);
        quote!((#n, #flops))
    });
    let train_cost = match train {
        Some(p) => {
            let f = program_flops(ctx, p);
            let upd = (parameters as u64).saturating_mul(4);
            quote!(#f.saturating_add(#upd))
        }
        None => quote!(0u64),
    };
    let ws_bytes = programs.iter().enumerate().map(|(i, _)| {
        let ty = format_ident!("__Modelc{}Ws{}", ctx.name, i);
        quote!(#ty::bytes(&__d))
    });
    let total_params: usize = m.params.iter().map(|p| p.dims.iter().product::<usize>()).fold(0, usize::saturating_add);
    let state_bytes = (total_params as u64).saturating_add(slot_scalars).saturating_mul(4);
    let cost_doc = if m.symbols.is_empty() {
        "What the model costs: FLOPs per fetch and per `train_step`, and memory. Every count saturates at `u64::MAX` (see `modelc::Cost`).".to_string()
    } else {
        format!(
            "What the model costs for these values of its symbolic dimensions ({}): FLOPs per fetch and per `train_step`, and memory. Every count saturates at `u64::MAX` instead of overflowing (see `modelc::Cost`).",
            m.symbols.join(", ")
        )
    };
    let has_opt = m.optimizer.is_some();
    let save_slots = quote! {
        if let ::core::option::Option::Some(__opt) = self.__state.optimizer.as_ref() {
            let __trainable: [(&str, &[usize]); #n_trainable] = [#((#tstrs, #tdims_tok)),*];
            for (__t, (__pname, __dims)) in __trainable.iter().enumerate() {
                for (__s, __slot) in __opt.slot_names().iter().enumerate() {
                    __tensors.push(::modelc::__private::checkpoint::TensorData {
                        name: ::modelc::__private::slot_name(__pname, __slot),
                        shape: __dims.to_vec(),
                        data: ::std::borrow::Cow::Borrowed(&self.__state.slots[__t][__s]),
                    });
                }
            }
        }
    };
    let _ = has_opt;
    quote! {
        /// Creates the model with every param initialized from the default seed (0).
        pub fn new() -> Self {
            Self::with_seed(0)
        }

        /// Creates the model with every param initialized from `seed`; each param's
        /// values depend only on the seed and its name.
        pub fn with_seed(seed: u64) -> Self {
            let __optimizer: ::core::option::Option<::modelc::__private::optim::Optimizer> = #optimizer;
            let __slots = match __optimizer.as_ref() {
                ::core::option::Option::Some(__o) => ::std::vec![#(__o.new_slots(#tlens)),*],
                ::core::option::Option::None => ::std::vec::Vec::new(),
            };
            Self {
                #(#inits)*
                __state: #state_ty {
                    optimizer: __optimizer,
                    slots: __slots,
                    global_step: 0,
                    gscratch: ::std::vec::Vec::new(),
                    #(#ws_none)*
                },
            }
        }

        fn __clone_parts(other: &Self) -> Self {
            Self {
                #(#pnames: other.#pnames.clone(),)*
                __state: #state_ty {
                    optimizer: other.__state.optimizer,
                    slots: other.__state.slots.clone(),
                    global_step: other.__state.global_step,
                    gscratch: ::std::vec::Vec::new(),
                    #(#ws_none2)*
                },
            }
        }

        /// The number of updates applied so far.
        pub fn global_step(&self) -> u64 {
            self.__state.global_step
        }

        /// The trainable params (TensorFlow's `tf.trainable_variables()`): name, shape.
        pub fn trainable_variables(&self) -> ::std::vec::Vec<::modelc::Variable> {
            self.variables().into_iter().filter(|v| v.trainable).collect()
        }

        /// Every param, trainable or frozen.
        pub fn variables(&self) -> ::std::vec::Vec<::modelc::Variable> {
            ::std::vec![#(::modelc::Variable { name: #pstrs, shape: (#all_dims_tok).to_vec(), trainable: #ptrain }),*]
        }

        /// The number of trainable scalars.
        pub const PARAMETERS: usize = #parameters;

        /// The forward program, the rewrites the compiler made, and the derived
        /// gradients, as text.
        pub fn explain() -> &'static str {
            #explain_text
        }

        /// The simplified graph (forward and backward) in Graphviz's dot language.
        pub fn graph_dot() -> &'static str {
            #dot_text
        }

        #[doc = #cost_doc]
        pub fn cost(#(#sym_args: usize),*) -> ::modelc::Cost {
            let __d: [usize; #k] = [#(#sym_args),*];
            ::modelc::Cost {
                fetches: ::std::vec![#(#fetch_costs),*],
                train_step: #train_cost,
                workspace_bytes: 0u64 #(.saturating_add(#ws_bytes))*,
                state_bytes: #state_bytes,
            }
        }

        /// Saves the params, the optimizer's slots and the global step to a safetensors
        /// file, atomically (a temporary file, then a rename). A param the user replaced
        /// by an array in another layout (transposed, reversed, strided) is saved by its
        /// values; one of another shape is an `Error::Shape` and nothing is written.
        pub fn save(&self, path: impl ::core::convert::AsRef<::std::path::Path>) -> ::core::result::Result<(), ::modelc::Error> {
            // A param in any layout (the fields are public): its logical values, copied
            // only if it is not in standard layout; another shape is an error.
            let mut __tensors = ::std::vec![#(::modelc::__private::checkpoint::TensorData::param(#pstrs, &self.#pnames, #all_dims_tok)?),*];
            #save_slots
            ::modelc::__private::checkpoint::save(path.as_ref(), #name_str, self.__state.global_step, &__tensors)
        }

        /// Loads a model saved by [`Self::save`]: params, optimizer slots and global step,
        /// so that training resumes exactly. Every name, dtype and shape is checked; the
        /// error names what differs.
        pub fn load(path: impl ::core::convert::AsRef<::std::path::Path>) -> ::core::result::Result<Self, ::modelc::Error> {
            let __path = path.as_ref();
            let mut __m = Self::new();
            let mut __expected: ::std::vec::Vec<(::std::string::String, ::std::vec::Vec<usize>)> =
                ::std::vec![#((::std::string::String::from(#pstrs), (#all_dims_tok).to_vec())),*];
            if let ::core::option::Option::Some(__opt) = __m.__state.optimizer.as_ref() {
                let __trainable: [(&str, &[usize]); #n_trainable] = [#((#tstrs, #tdims_tok)),*];
                for (__pname, __dims) in __trainable {
                    for __slot in __opt.slot_names() {
                        __expected.push((::modelc::__private::slot_name(__pname, __slot), __dims.to_vec()));
                    }
                }
            }
            let mut __ck = ::modelc::__private::checkpoint::load(__path, #name_str, &__expected)?;
            #(::modelc::__private::take_into(&mut __ck, #pstrs, ::modelc::__private::slice_mut(&mut __m.#pnames), __path)?;)*
            if let ::core::option::Option::Some(__opt) = __m.__state.optimizer {
                let __names: [&str; #n_trainable] = [#(#tstrs),*];
                for (__t, __pname) in __names.iter().enumerate() {
                    for (__s, __slot) in __opt.slot_names().iter().enumerate() {
                        let __n = ::modelc::__private::slot_name(__pname, __slot);
                        ::modelc::__private::take_into(&mut __ck, &__n, &mut __m.__state.slots[__t][__s], __path)?;
                    }
                }
            }
            __m.__state.global_step = __ck.global_step;
            ::core::result::Result::Ok(__m)
        }
    }
}

/// How many slots of a param's size the optimizer keeps.
fn slot_count(kind: OptimizerKind) -> u64 {
    match kind {
        OptimizerKind::Sgd => 0,
        OptimizerKind::Momentum { .. } | OptimizerKind::Adagrad { .. } => 1,
        OptimizerKind::Adam { .. } => 2,
        OptimizerKind::RmsProp { momentum, centered, .. } => 1 + u64::from(momentum > 0.0) + u64::from(centered),
    }
}

/// FLOPs of one program as a `u64` expression of `__d`.
fn program_flops(ctx: &Ctx, p: &Program) -> TokenStream {
    let g = &ctx.m.graph;
    let mut terms = Vec::new();
    let mut ids: Vec<NodeId> = p.steps.iter().map(|s| s.0).collect();
    ids.extend(p.steps.iter().filter_map(|s| match s.1 {
        Step::XentWithGrad(other) | Step::MatMulThen(other) => Some(other),
        _ => None,
    }));
    ids.extend(p.inlined.iter().copied());
    for id in ids {
        let node = g.node(id);
        let per = node.op.flops_per_element();
        if per == 0 {
            continue;
        }
        let t = match &node.op {
            Op::MatMul { ta, .. } => {
                let a = g.shape(node.inputs[0]);
                let kdim = if *ta { &a.0[0] } else { &a.0[1] };
                let k = dim_tokens(ctx.m, kdim);
                let out = numel_tokens(ctx.m, &node.shape);
                quote!(#out.saturating_mul(#k as u64).saturating_mul(2))
            }
            Op::Sum { .. } | Op::Max { .. } | Op::Argmax { .. } | Op::SumTo(_) | Op::SoftmaxXent => {
                let inp = numel_tokens(ctx.m, g.shape(node.inputs[0]));
                quote!(#inp.saturating_mul(#per))
            }
            _ => {
                let out = numel_tokens(ctx.m, &node.shape);
                quote!(#out.saturating_mul(#per))
            }
        };
        terms.push(t);
    }
    quote!((0u64 #(.saturating_add(#terms))*))
}

/// Tokens for a `&'static str`.
pub fn str_lit(s: &str) -> TokenStream {
    let lit = Literal::string(s);
    let _ = Span::call_site();
    quote!(#lit)
}
