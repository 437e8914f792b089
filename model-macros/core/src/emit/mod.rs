//! Code generation: the model struct, its gradients struct, one pruned function per
//! fetch, the training functions, and the introspection functions.
//!
//! Everything generated names the runtime through `::modelc::__private` and
//! `::modelc::ndarray`, and every local starts with `__`, so that user names never
//! collide with generated ones. Emission trusts the checks of the earlier stages.

mod api;
mod fallback;
mod import;
pub mod plan;
mod program;
mod train;

pub use fallback::fallback;

use proc_macro2::{Ident, Literal, Span, TokenStream};
use quote::{format_ident, quote};

use crate::autodiff::Compiled;
use crate::ir::explain;
use crate::ir::{DType, NodeId};
use crate::model::{InitSpec, Model, OptimizerKind};
use crate::ops::elementwise::f32_tokens;
use crate::ops::Op;
use crate::shape::{Dim, Shape};
use crate::syntax::NodeKind;
use plan::{group_members, Program, Step};

use api::*;
use program::*;
use train::*;

/// `::modelc::ndarray::ArrayN<f32>`
pub fn array_ty(rank: usize) -> TokenStream {
    array_ty_of(rank, DType::F32)
}

/// `::modelc::ndarray::ArrayN<T>` for the element type `T` of `dtype`.
pub fn array_ty_of(rank: usize, dtype: DType) -> TokenStream {
    let (id, t) = (format_ident!("Array{}", rank), dtype.tokens());
    quote!(::modelc::ndarray::#id<#t>)
}

/// `::modelc::ndarray::ArrayN::<f32>` (expression position).
pub fn array_path(rank: usize) -> TokenStream {
    array_path_of(rank, DType::F32)
}

/// `::modelc::ndarray::ArrayN::<T>` (expression position).
pub fn array_path_of(rank: usize, dtype: DType) -> TokenStream {
    let (id, t) = (format_ident!("Array{}", rank), dtype.tokens());
    quote!(::modelc::ndarray::#id::<#t>)
}

/// `::modelc::ndarray::ArrayViewN<'_, T>`
pub fn view_ty(rank: usize, dtype: DType) -> TokenStream {
    let (id, t) = (format_ident!("ArrayView{}", rank), dtype.tokens());
    quote!(::modelc::ndarray::#id<'_, #t>)
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
    /// The model draws dropout masks: its state holds a random stream (`ops::random`).
    dropout: bool,
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
        dropout: crate::ops::random::has_dropout(&m.graph),
    };
    let mut programs: Vec<(String, Program)> =
        m.fetches.iter().map(|f| (f.name.to_string(), plan::plan(m, &[f.node]))).collect();
    let train = m.optimizer.as_ref().and_then(|_| {
        let loss = m.train_loss_node()?;
        let mut roots = vec![loss];
        roots.extend(c.grads.iter().map(|g| g.1));
        Some(plan::plan(m, &roots))
    });
    if let Some(t) = &train {
        programs.push(("__train".to_string(), t.clone()));
    }
    // Plain SGD: a dedicated train_step program whose weight updates are fused into the
    // gradient products (see `sgd_updates`).
    let fused = train.as_ref().and_then(|_| sgd_updates(c)).map(|updates| {
        let loss = m.train_loss_node().unwrap_or(0);
        let mut roots = vec![loss];
        for (_, u) in &updates {
            match *u {
                Update::MatMul { a, b, .. } => roots.extend([a, b]),
                Update::SumTo { src } => roots.push(src),
                Update::Plain { grad } => roots.push(grad),
                Update::Scatter { src, ids, .. } => roots.extend([src, ids]),
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
    let replica = replica_impls(&ctx);
    let import_fns = import::methods(m);
    let name = ctx.name;
    quote! {
        #struct_def
        #grads_struct
        #replica
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
    let stream = if ctx.dropout {
        quote! {
            /// The dropout masks' random stream (seeded by `with_seed`, saved in checkpoints).
            dropout: ::modelc::__private::random::DropoutStream,
        }
    } else {
        TokenStream::new()
    };
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
            /// Plain SGD's staged params, one per update (see `sgd_guard`), sized on
            /// first use: the guard computes an update out of place here and swaps it
            /// in for the param, so each holds the param of the step before.
            gscratch: ::std::vec::Vec<::std::vec::Vec<f32>>,
            #stream
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

/// Tokens for a `&'static str`.
pub fn str_lit(s: &str) -> TokenStream {
    let lit = Literal::string(s);
    let _ = Span::call_site();
    quote!(#lit)
}
