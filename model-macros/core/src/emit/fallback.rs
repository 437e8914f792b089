//! What the macro expands to when the model has errors: the errors, plus a stub with the
//! same public API (struct, params, gradients struct, every method with the inputs it
//! would take), so that the user sees only the real mistakes and not a cascade of
//! "no method named `train_step`" errors (thiserror's `fallback.rs` pattern).

use proc_macro2::TokenStream;
use quote::{format_ident, quote};

use super::{array_ty, array_ty_of, plan, view_ty};
use crate::diag::Diag;
use crate::model::Model;
use crate::syntax::{Item, ModelDef, NodeKind};

/// The errors, plus a stub of the model's API whose bodies are unreachable.
pub fn fallback(def: &ModelDef, model: &Model, diag: &Diag) -> TokenStream {
    let errors = diag.to_compile_errors();
    let name = &def.ident;
    let vis = &def.vis;
    let attrs = &def.attrs;
    let grads_ty = format_ident!("{}Gradients", name);
    let stub = quote!(::core::unreachable!("this model has compile errors"));
    let name_str = name.to_string();

    let params: Vec<_> = def
        .items
        .iter()
        .filter_map(|i| match i {
            Item::Param(p) => Some(p),
            _ => None,
        })
        .collect();
    let fields = params.iter().map(|p| {
        let (n, t, a) = (&p.name, array_ty(p.shape.dims.len()), &p.attrs);
        quote!(#(#a)* pub #n: #t,)
    });
    let gfields = params.iter().filter(|p| !p.frozen).map(|p| {
        let (n, t) = (&p.name, array_ty(p.shape.dims.len()));
        quote!(pub #n: #t,)
    });

    // Every input a function could take, by name.
    let all_inputs: Vec<TokenStream> = def
        .items
        .iter()
        .filter_map(|i| match i {
            Item::Input(inp) => {
                let (n, t) = (&inp.name, view_ty(inp.shape.dims.len(), syntax_dtype(inp)));
                Some(quote!(#n: #t))
            }
            _ => None,
        })
        .collect();
    let inputs_of = |node: Option<usize>, expr: &syn::Expr| -> Vec<TokenStream> {
        match node {
            Some(node) => {
                let p = plan::plan(model, &[node]);
                p.inputs
                    .iter()
                    .map(|&i| {
                        let inp = &model.inputs[i];
                        let (n, t) = (&inp.name, view_ty(inp.shape.rank(), inp.dtype));
                        quote!(#n: #t)
                    })
                    .collect()
            }
            None => {
                // The node did not lower: find the inputs its expression names, directly or
                // through other items, so that the stub takes the inputs the user passes.
                let mut names = std::collections::BTreeSet::new();
                let mut seen = std::collections::BTreeSet::new();
                names_used(def, expr, &mut names, &mut seen);
                def.items
                    .iter()
                    .filter_map(|i| match i {
                        Item::Input(inp) if names.contains(&inp.name.to_string()) => {
                            let (n, t) = (&inp.name, view_ty(inp.shape.dims.len(), syntax_dtype(inp)));
                            Some(quote!(#n: #t))
                        }
                        _ => None,
                    })
                    .collect()
            }
        }
    };

    let mut fns = Vec::new();
    let mut loss_node = None;
    let mut has_loss_item = false;
    for item in &def.items {
        let Item::Node(n) = item else { continue };
        if n.kind == NodeKind::Let || crate::lower::RESERVED.contains(&n.name.to_string().as_str()) {
            continue;
        }
        let fetch = model.fetches.iter().find(|f| f.name == n.name);
        let node = fetch.map(|f| f.node);
        if n.kind == NodeKind::Loss && !has_loss_item {
            has_loss_item = true;
            loss_node = Some((node, &n.expr));
        }
        let ps = inputs_of(node, &n.expr);
        let ret = match (n.kind, node) {
            (NodeKind::Output, Some(id)) => array_ty_of(model.graph.shape(id).rank(), model.graph.dtype(id)),
            (NodeKind::Output, None) => quote!(::modelc::ndarray::ArrayD<f32>),
            _ => quote!(f32),
        };
        let fname = &n.name;
        fns.push(quote! {
            pub fn #fname(&self, #(#ps),*) -> ::core::result::Result<#ret, ::modelc::Error> { #stub }
        });
    }
    let has_optimizer = def.items.iter().any(|i| matches!(i, Item::Optimizer(_)));
    if has_optimizer {
        let ps = match loss_node {
            Some((node, expr)) => inputs_of(node, expr),
            None => all_inputs.clone(),
        };
        fns.push(quote! {
            pub fn train_step(&mut self, #(#ps),*) -> ::core::result::Result<f32, ::modelc::Error> { #stub }
            pub fn compute_gradients(&mut self, #(#ps),*) -> ::core::result::Result<(f32, #grads_ty), ::modelc::Error> { #stub }
            pub fn compute_gradients_into(&mut self, #(#ps,)* gradients: &mut #grads_ty) -> ::core::result::Result<f32, ::modelc::Error> { #stub }
            pub fn apply_gradients(&mut self, gradients: &#grads_ty) -> ::core::result::Result<(), ::modelc::Error> { #stub }
            pub fn check_gradients(&mut self, #(#ps),*) -> ::core::result::Result<::modelc::GradientCheck, ::modelc::Error> { #stub }
            pub fn learning_rate(&self) -> f32 { #stub }
            pub fn set_learning_rate(&mut self, learning_rate: f32) { #stub }
        });
    }
    let syms = model.symbols.iter().map(|s| format_ident!("{}", s));
    quote! {
        #errors

        #(#attrs)*
        #vis struct #name {
            #(#fields)*
        }

        #[derive(Clone, Debug, PartialEq)]
        #vis struct #grads_ty {
            #(#gfields)*
        }

        #[allow(clippy::all, dead_code, unreachable_code)]
        impl #grads_ty {
            pub fn zeros() -> Self { #stub }
        }

        // The traits `modelc::mpi::World` takes (api.rs implements them for a model that
        // compiles), so that a distributed training loop adds no error of its own.
        #[allow(unused_variables, clippy::all, dead_code, unreachable_code)]
        impl ::modelc::mpi::Gradients for #grads_ty {
            const MODEL: &'static str = #name_str;
            const LAYOUT: &'static [(&'static str, &'static [usize])] = &[];
            fn visit(&self, f: &mut dyn FnMut(usize, ::modelc::ndarray::ArrayViewD<'_, f32>)) { #stub }
            fn visit_mut(&mut self, f: &mut dyn FnMut(usize, ::modelc::ndarray::ArrayViewMutD<'_, f32>)) { #stub }
        }

        #[allow(unused_variables, clippy::all, dead_code, unreachable_code)]
        impl ::modelc::mpi::Replica for #name {
            type Grads = #grads_ty;
            fn state_bytes(&self) -> ::core::result::Result<::std::vec::Vec<u8>, ::modelc::Error> { #stub }
            fn restore_state_bytes(&mut self, bytes: &[u8]) -> ::core::result::Result<(), ::modelc::Error> { #stub }
            fn replica_learning_rate(&self) -> f32 { #stub }
            fn set_replica_learning_rate(&mut self, learning_rate: f32) { #stub }
            fn set_shard(&mut self, rank: usize, ranks: usize) { #stub }
            fn apply_scaled(&mut self, sum: &#grads_ty, scale: f32, largest: ::core::option::Option<f64>) -> ::core::result::Result<(), ::modelc::Error> { #stub }
        }

        impl ::core::clone::Clone for #name {
            fn clone(&self) -> Self { #stub }
        }

        impl ::core::default::Default for #name {
            fn default() -> Self { #stub }
        }

        #[allow(unused_variables, clippy::all, dead_code, unreachable_code)]
        impl #name {
            pub const PARAMETERS: usize = 0;
            pub fn new() -> Self { #stub }
            pub fn with_seed(seed: u64) -> Self { #stub }
            pub fn global_step(&self) -> u64 { #stub }
            pub fn trainable_variables(&self) -> ::std::vec::Vec<::modelc::Variable> { #stub }
            pub fn variables(&self) -> ::std::vec::Vec<::modelc::Variable> { #stub }
            pub fn explain() -> &'static str { #stub }
            pub fn graph_dot() -> &'static str { #stub }
            pub fn cost(#(#syms: usize),*) -> ::modelc::Cost { #stub }
            pub fn save(&self, path: impl ::core::convert::AsRef<::std::path::Path>) -> ::core::result::Result<(), ::modelc::Error> { #stub }
            pub fn load(path: impl ::core::convert::AsRef<::std::path::Path>) -> ::core::result::Result<Self, ::modelc::Error> { #stub }
            pub fn load_params(&mut self, path: impl ::core::convert::AsRef<::std::path::Path>, map: &::modelc::NameMap) -> ::core::result::Result<(), ::modelc::Error> { #stub }
            pub fn from_safetensors(path: impl ::core::convert::AsRef<::std::path::Path>, map: &::modelc::NameMap) -> ::core::result::Result<Self, ::modelc::Error> { #stub }
            #(#fns)*
        }
    }
}

/// The names an expression uses, following `let`s and fetches through the model.
fn names_used(
    def: &ModelDef,
    e: &syn::Expr,
    out: &mut std::collections::BTreeSet<String>,
    seen: &mut std::collections::BTreeSet<String>,
) {
    use syn::Expr;
    match e {
        Expr::Path(p) => {
            if let Some(id) = p.path.get_ident() {
                let name = id.to_string();
                if !seen.insert(name.clone()) {
                    return;
                }
                out.insert(name.clone());
                for item in &def.items {
                    if let Item::Node(n) = item {
                        if n.name == name {
                            names_used(def, &n.expr, out, seen);
                        }
                    }
                }
            }
        }
        Expr::Call(c) => c.args.iter().for_each(|a| names_used(def, a, out, seen)),
        Expr::MethodCall(m) => {
            names_used(def, &m.receiver, out, seen);
            m.args.iter().for_each(|a| names_used(def, a, out, seen));
        }
        Expr::Binary(b) => {
            names_used(def, &b.left, out, seen);
            names_used(def, &b.right, out, seen);
        }
        Expr::Unary(u) => names_used(def, &u.expr, out, seen),
        Expr::Paren(p) => names_used(def, &p.expr, out, seen),
        Expr::Group(g) => names_used(def, &g.expr, out, seen),
        Expr::Assign(a) => names_used(def, &a.right, out, seen),
        _ => {}
    }
}

/// The element type an input item declares (`as u32`), as the stub's signatures show it.
fn syntax_dtype(inp: &crate::syntax::InputItem) -> crate::ir::DType {
    match inp.element.as_ref().map(|e| e.to_string()) {
        Some(t) if t == "u32" => crate::ir::DType::U32,
        _ => crate::ir::DType::F32,
    }
}
