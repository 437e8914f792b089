//! One program's code: its workspace, the validation prologue, the fused loops and
//! kernel calls of its steps, and the fetch functions.

use super::*;

pub(super) fn workspace(ctx: &Ctx, i: usize, p: &Program) -> TokenStream {
    let ty = format_ident!("__Modelc{}Ws{}", ctx.name, i);
    let fields = p.slot_shapes.iter().zip(&p.slot_dtypes).enumerate().map(|(k, (shape, &dt))| {
        let (b, t) = (format_ident!("__s{}", k), array_ty_of(shape.rank(), dt));
        quote!(#b: #t,)
    });
    let inits = p.slot_shapes.iter().zip(&p.slot_dtypes).enumerate().map(|(k, (shape, &dt))| {
        let (b, t, s) = (format_ident!("__s{}", k), array_path_of(shape.rank(), dt), shape_tokens(ctx.m, shape));
        quote!(#b: #t::zeros(#s),)
    });
    // 4 bytes per f32 or u32 element (and per scratch float); the fused conv + pool's
    // u8 argmax buffers 1 each, added after.
    let u8_slot = |dt: &crate::ir::DType| *dt == crate::ir::DType::U8;
    let bytes: Vec<TokenStream> = p
        .slot_shapes
        .iter()
        .zip(&p.slot_dtypes)
        .filter(|(_, dt)| !u8_slot(dt))
        .map(|(shape, _)| numel_tokens(ctx.m, shape))
        .collect();
    let bytes_u8 = p.slot_shapes.iter().zip(&p.slot_dtypes).filter(|(_, dt)| u8_slot(dt)).map(|(shape, _)| {
        let n = numel_tokens(ctx.m, shape);
        quote!(.saturating_add(#n))
    });
    // The conv kernels' im2col tiles: one scratch for all of the program's conv steps
    // (they run one after another), grown by the first call (`runtime::conv`).
    let g = &ctx.m.graph;
    let convs: Vec<TokenStream> = p
        .steps
        .iter()
        .filter_map(|(id, _)| match &g.node(*id).op {
            Op::Conv2d(c) | Op::Conv2dGradInput(c) | Op::Conv2dGradFilter(c) => {
                let n = dim_tokens(ctx.m, &g.shape(g.node(*id).inputs[0]).0[0]);
                Some(crate::ops::conv::scratch_tokens(&g.node(*id).op, c, n))
            }
            Op::ConvPool(c) => {
                let n = dim_tokens(ctx.m, &g.shape(g.node(*id).inputs[0]).0[0]);
                Some(crate::ops::conv::fused_scratch_tokens(&c.conv, n))
            }
            _ => None,
        })
        .collect();
    let has_conv = !convs.is_empty();
    let scratch_bytes = if has_conv { quote!(.saturating_add(0u64 #(.max(#convs))*)) } else { TokenStream::new() };
    let (conv_field, conv_init) = if has_conv {
        (quote!(__conv: ::std::vec::Vec<f32>,), quote!(__conv: ::std::vec::Vec::new(),))
    } else {
        (TokenStream::new(), TokenStream::new())
    };
    let k = ctx.k;
    quote! {
        #[doc(hidden)]
        #[derive(Clone, Debug)]
        #[allow(non_camel_case_types)]
        struct #ty {
            #(#fields)*
            #conv_field
        }

        #[allow(unused_variables, clippy::all)]
        impl #ty {
            fn new(__d: &[usize; #k]) -> Self {
                Self { #(#inits)* #conv_init }
            }
            fn bytes(__d: &[usize; #k]) -> u64 {
                4u64.saturating_mul(0u64 #(.saturating_add(#bytes))* #scratch_bytes) #(#bytes_u8)*
            }
        }
    }
}

/// `fn NAME(&mut self, x: ArrayView2<f32>, ...)` parameters for a program's inputs.
pub(super) fn input_params(ctx: &Ctx, p: &Program) -> Vec<TokenStream> {
    p.inputs
        .iter()
        .map(|&i| {
            let inp = &ctx.m.inputs[i];
            let (n, t) = (&inp.name, view_ty(inp.shape.rank(), inp.dtype));
            quote!(#n: #t)
        })
        .collect()
}

pub(super) fn input_args(ctx: &Ctx, p: &Program) -> Vec<Ident> {
    p.inputs.iter().map(|&i| ctx.m.inputs[i].name.clone()).collect()
}

/// Validation of inputs and params: nothing has changed when this returns `Err`.
pub(super) fn validate(ctx: &Ctx, p: &Program) -> TokenStream {
    validate_as(ctx, p, true)
}

/// [`validate`]; `fix_layout`: put a param replaced by a non-standard array back in
/// standard layout (needs `&mut self`; the `&self` fetches only check its shape).
pub(super) fn validate_as(ctx: &Ctx, p: &Program, fix_layout: bool) -> TokenStream {
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
            Op::Max { axes, .. } => {
                for axis in axes {
                    if let Some(Dim::Sym(s)) = node.inputs.first().and_then(|&i| g.shape(i).0.get(*axis)) {
                        note(s, "max", &mut counted);
                    }
                }
            }
            Op::Argmax { axis, .. } => {
                if let Some(Dim::Sym(s)) = node.inputs.first().and_then(|&i| g.shape(i).0.get(*axis)) {
                    note(s, "argmax", &mut counted);
                }
            }
            _ => {}
        }
    }
    let reshapes = reshape_checks(ctx, p);
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
    let indices = index_checks(ctx, p);
    quote! {
        let mut __b = ::modelc::__private::Binder::<#k>::new([#(#names),*]);
        #(#binds)*
        let __d: [usize; #k] = __b.values();
        #counts
        #(#indices)*
        #reshapes
        #(#params)*
    }
}

/// The range checks of index inputs: every id an index op reads from an input must be
/// below the op's bound (`one_hot`'s depth, the table's rows, the classes), checked
/// before anything runs (`Err(Error::Index)`). Indices an `argmax` computes are checked
/// at compile time instead (`lower/index.rs`). Ids that reach the op through shape ops
/// (a reshape, slice or concatenation of an input, a `where` between inputs) put the
/// bound on the inputs they come from (`ops::shape::index_sources`): on the whole input,
/// or on the window a slice of it reads.
fn index_checks(ctx: &Ctx, p: &Program) -> Vec<TokenStream> {
    let m = ctx.m;
    let g = &m.graph;
    let mut seen: Vec<(usize, Dim, crate::ops::shape::Window)> = Vec::new();
    let mut out = Vec::new();
    for id in g.cone(&p.roots) {
        let node = g.node(id);
        let (ids, bound, what) = match &node.op {
            Op::OneHot { depth } => (node.inputs[0], Dim::Static(*depth), "`one_hot` (its depth)".to_string()),
            Op::Gather | Op::GatherSum => {
                let table = node.inputs[0];
                let name = m.names.iter().find(|(n, _)| *n == table).map_or("the table", |(_, s)| s.as_str());
                (node.inputs[1], g.shape(table).0[0].clone(), format!("`gather` from `{name}` (its rows)"))
            }
            Op::SparseXent => {
                let z = g.shape(node.inputs[0]);
                (node.inputs[1], z.0[z.rank() - 1].clone(), "`sparse_softmax_cross_entropy` (the classes)".to_string())
            }
            _ => continue,
        };
        for (source, window) in crate::ops::shape::index_sources(g, ids) {
            let Op::Input(i) = g.node(source).op else { continue };
            let key = (i, bound.clone(), window);
            if seen.contains(&key) {
                continue;
            }
            let (n, ns) = (&m.inputs[i].name, m.inputs[i].name.to_string());
            let b = dim_tokens(m, &bound);
            out.push(if key.2.is_empty() {
                quote!(::modelc::__private::check_indices(#ns, #n.view(), #b, #what)?;)
            } else {
                let w = key.2.iter().map(|(a, s, e)| quote!((#a, #s, #e)));
                quote!(::modelc::__private::shape::check_indices_in(#ns, #n.view(), &[#(#w),*], #b, #what)?;)
            });
            seen.push(key);
        }
    }
    out
}

/// The prologue's checks of reshapes whose element count the compiler could not prove
/// (`[batch, 6] -> [n, 4]`): `Err(Error::Shape)` naming an input that binds one of the
/// dimensions involved, before anything runs.
fn reshape_checks(ctx: &Ctx, p: &Program) -> TokenStream {
    let m = ctx.m;
    let g = &m.graph;
    let mut out = TokenStream::new();
    let mut seen: Vec<(crate::shape::Shape, crate::shape::Shape)> = Vec::new();
    for id in g.cone(&p.roots) {
        let node = g.node(id);
        let Op::Reshape(to) = &node.op else { continue };
        let from = g.shape(node.inputs[0]).clone();
        if !crate::ops::shape::needs_runtime_check(&from, to) || seen.contains(&(from.clone(), to.clone())) {
            continue;
        }
        seen.push((from.clone(), to.clone()));
        // An input of this program declaring a dimension of the target (else of the source).
        let syms: Vec<String> = to.symbols().into_iter().chain(from.symbols()).collect();
        let Some(&i) = p.inputs.iter().find(|&&i| m.inputs[i].shape.symbols().iter().any(|s| syms.contains(s))) else {
            continue;
        };
        let inp = &m.inputs[i];
        let (n, ns, declared) = (&inp.name, inp.name.to_string(), inp.shape.to_string());
        let (fs, ts) = (from.to_string(), to.to_string());
        let (fl, tl) = (numel_tokens(m, &from), numel_tokens(m, to));
        out.extend(quote!(::modelc::__private::shape::check_reshape(#ns, #declared, #n.shape(), #fs, #ts, #fl, #tl)?;));
    }
    out
}

/// The scalar expression of operand `id` inside a fused loop.
pub(super) fn scalar_operand(ctx: &Ctx, p: &Program, id: NodeId, externals: &[NodeId]) -> TokenStream {
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
pub(super) fn producer(ctx: &Ctx, p: &Program, id: NodeId) -> TokenStream {
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

/// A read-only view of `id`, for kernels. A view-reshape (see [`Program::aliases`]) is
/// its base's buffer seen in its own shape: the buffer is a standard-layout array and
/// the element count was checked (at compile time or in the prologue), so
/// `into_shape_with_order` cannot fail.
pub(super) fn view(ctx: &Ctx, p: &Program, id: NodeId) -> TokenStream {
    let m = ctx.m;
    if let Some(&base) = p.aliases.get(&id) {
        let v = view(ctx, p, base);
        let s = shape_tokens(m, m.graph.shape(id));
        return quote!(#v.into_shape_with_order(#s).expect("a workspace buffer is contiguous"));
    }
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
pub(super) fn compute(ctx: &Ctx, p: &Program) -> TokenStream {
    compute_steps(ctx, p).into_iter().collect()
}

/// The statements of each step of `p`, in order.
pub(super) fn compute_steps(ctx: &Ctx, p: &Program) -> Vec<TokenStream> {
    compute_steps_bounded(ctx, p, &[])
}

/// The products of `p` that can bound one of `operands` as they compute (a
/// `matmul_act` step whose untransposed left operand it is: `kernels::matmul_act_bound`),
/// as `(product, operand)`.
pub(super) fn bound_sites(ctx: &Ctx, p: &Program, operands: &[NodeId]) -> Vec<(NodeId, NodeId)> {
    let g = &ctx.m.graph;
    let mut sites: Vec<(NodeId, NodeId)> = Vec::new();
    for (id, step) in &p.steps {
        let Step::MatMulThen(product) = step else { continue };
        let pn = g.node(*product);
        let Op::MatMul { ta: false, .. } = pn.op else { continue };
        let x = pn.inputs[0];
        let members = group_members(g, p, *id);
        if operands.contains(&x) && !sites.iter().any(|s| s.1 == x) && kernel_act(g, &members, *id, *product).is_some()
        {
            sites.push((*product, x));
        }
    }
    sites
}

/// [`compute_steps`], where the products of `bounded` (`(product, variable)`, from
/// [`bound_sites`]) also assign the bound of their left operand to the variable.
pub(super) fn compute_steps_bounded(
    ctx: &Ctx,
    p: &Program,
    bounded: &[(NodeId, proc_macro2::Ident)],
) -> Vec<TokenStream> {
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
                match p.norm_stats.get(id) {
                    Some(&s) => {
                        let stats = format_ident!("__s{}", s);
                        crate::ops::norm::saved_stats_call(
                            &node.op,
                            &args,
                            &quote!(__ws.#b.view_mut()),
                            &quote!(__ws.#stats),
                        )
                    }
                    None => node.op.kernel_call(&args, &quote!(__ws.#b.view_mut())),
                }
            }
            Step::XentWithGrad(grad) => {
                let gb = buf(p, *grad);
                let gn = g.node(*grad);
                let (z, y, adj) = (view(ctx, p, gn.inputs[0]), view(ctx, p, gn.inputs[1]), view(ctx, p, gn.inputs[2]));
                let kernel = if node.op == Op::SparseXent {
                    quote!(sparse_softmax_xent_with_grad)
                } else {
                    quote!(softmax_xent_with_grad)
                };
                quote! {
                    ::modelc::__private::kernels::#kernel(
                        #z.into_dyn(), #y.into_dyn(), #adj.into_dyn(),
                        __ws.#b.view_mut().into_dyn(), __ws.#gb.view_mut().into_dyn(),
                    );
                }
            }
            Step::ConvPoolWithArgmax(arg) => conv_pool_pair(ctx, p, *id, *arg),
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
                    match bounded.iter().find(|s| s.0 == *product) {
                        Some((_, var)) => quote! {
                            #var = ::modelc::__private::kernels::matmul_act_bound(
                                #a, #ta, #bv, #tb, __ws.#b.view_mut(),
                                ::modelc::__private::kernels::Act { bias: #bias, relu: #relu, mask: #mask },
                            );
                        },
                        None => quote! {
                            ::modelc::__private::kernels::matmul_act(
                                #a, #ta, #bv, #tb, __ws.#b.view_mut(),
                                ::modelc::__private::kernels::Act { bias: #bias, relu: #relu, mask: #mask },
                            );
                        },
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

/// The one kernel call of a [`Step::ConvPoolWithArgmax`]: the fused conv + pool writing
/// the value's buffer and the argmax's.
fn conv_pool_pair(ctx: &Ctx, p: &Program, value: NodeId, arg: NodeId) -> TokenStream {
    let g = &ctx.m.graph;
    let node = g.node(value);
    let Op::ConvPool(c) = &node.op else { unreachable!("the planner pairs ConvPool nodes only") };
    let args: Vec<TokenStream> = node.inputs.iter().map(|&i| view(ctx, p, i)).collect();
    let (vb, ab) = (buf(p, value), buf(p, arg));
    crate::ops::pool::conv_pool_call(
        c,
        &args,
        Some(&quote!(__ws.#vb.view_mut())),
        Some(&quote!(__ws.#ab.view_mut())),
        &quote!(&mut __ws.__conv),
    )
}

/// An epilogue the kernels apply themselves (`kernels::matmul_act`), as `(bias, relu,
/// mask)`: `relu(p + bias)`, `p + bias` or `relu(p)`, with `bias` a vector along the
/// product `p`'s rows (a layer's bias add and activation), or `p * step(mask)`, with
/// `mask` of `p`'s shape (relu's derivative from relu's output). Any other group runs
/// as a closure over finished blocks.
pub(super) fn kernel_act(
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

pub(super) fn scalar_operand_root(ctx: &Ctx, p: &Program, id: NodeId, externals: &[NodeId]) -> TokenStream {
    let node = ctx.m.graph.node(id);
    let args: Vec<TokenStream> = node.inputs.iter().map(|&i| scalar_operand(ctx, p, i, externals)).collect();
    node.op.scalar_expr(&args)
}

/// The prologue of every function computing program `i`: validate, then get the
/// workspace for these dimensions (allocated once per distinct set of dimensions).
pub(super) fn prologue(ctx: &Ctx, i: usize, p: &Program) -> TokenStream {
    let validate = validate(ctx, p);
    let f = format_ident!("ws{}", i);
    let ty = format_ident!("__Modelc{}Ws{}", ctx.name, i);
    quote! {
        #validate
        let __ws = ::modelc::__private::workspace(&mut self.__state.#f, __d, #ty::new);
    }
}

pub(super) fn fetch_fn(ctx: &Ctx, i: usize, f: &crate::model::Fetch, p: &Program) -> TokenStream {
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
        (array_ty_of(shape.rank(), g.dtype(f.node)), quote!(__ws.#b.clone()))
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
