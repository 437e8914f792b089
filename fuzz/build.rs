//! Writes `$OUT_DIR/models.rs`: `MODELC_RANDOM_MODELS` random models (default 40) from
//! the generator in `src/gen.rs`, seeds `MODELC_RANDOM_SEED + i` (default seed 1; the
//! share of CNNs among them `MODELC_RANDOM_CNN`, default 0.6 of the draws that may), each
//! as a `model! { .. }` block in its own module plus the glue that calls it with views
//! chosen by the test.
//!
//! A generated method takes exactly the inputs its program needs after simplification,
//! which only the compiler knows, so the glue is written from the compiler's own
//! expansion (`modelc_core::expand`): the parameter names of `compute_gradients`, `l`
//! and `acc` pick the test's views by input name. A model the compiler rejects is not
//! emitted; it goes into `REJECTED`, and the test fails listing it (every generated
//! model is valid by construction, so a rejection is a finding).

use std::fmt::Write as _;
use std::str::FromStr;

#[path = "src/gen.rs"]
mod gen;

fn env_u64(name: &str, default: u64) -> u64 {
    println!("cargo:rerun-if-env-changed={name}");
    match std::env::var(name) {
        Ok(v) => v.trim().parse().unwrap_or_else(|_| panic!("{name} must be a number, found {v:?}")),
        Err(_) => default,
    }
}

/// The parameter names (receiver excluded) of every fn in `items`, recursively.
fn signatures(items: &[syn::Item], out: &mut Vec<(String, Vec<String>)>) {
    for item in items {
        match item {
            syn::Item::Impl(i) => {
                for it in &i.items {
                    if let syn::ImplItem::Fn(f) = it {
                        let args = f
                            .sig
                            .inputs
                            .iter()
                            .filter_map(|a| match a {
                                syn::FnArg::Typed(t) => match &*t.pat {
                                    syn::Pat::Ident(p) => Some(p.ident.to_string()),
                                    _ => None,
                                },
                                syn::FnArg::Receiver(_) => None,
                            })
                            .collect();
                        out.push((f.sig.ident.to_string(), args));
                    }
                }
            }
            syn::Item::Mod(m) => {
                if let Some((_, items)) = &m.content {
                    signatures(items, out);
                }
            }
            syn::Item::Const(c) => {
                if let syn::Expr::Block(b) = &*c.expr {
                    let items: Vec<syn::Item> = b
                        .block
                        .stmts
                        .iter()
                        .filter_map(|s| match s {
                            syn::Stmt::Item(i) => Some(i.clone()),
                            _ => None,
                        })
                        .collect();
                    signatures(&items, out);
                }
            }
            _ => {}
        }
    }
}

fn main() {
    println!("cargo:rerun-if-changed=src/gen.rs");
    println!("cargo:rerun-if-changed=build.rs");
    let count = env_u64("MODELC_RANDOM_MODELS", 40);
    let base = env_u64("MODELC_RANDOM_SEED", 1);
    // Read by the generator itself (`option_env!`): the share of CNN draws.
    println!("cargo:rerun-if-env-changed=MODELC_RANDOM_CNN");
    let mut out = String::new();
    let mut table = String::new();
    let mut rejected = String::new();
    for i in 0..count {
        let seed = base.wrapping_add(i);
        let spec = gen::generate(seed);
        let text = gen::model_text("M", &spec);
        let tokens = match proc_macro2::TokenStream::from_str(&text) {
            Ok(t) => t,
            Err(e) => panic!("generated model {seed} does not tokenize ({e}):\n{text}"),
        };
        let expanded = modelc_core::expand(tokens);
        let expanded_text = expanded.to_string();
        if expanded_text.contains("compile_error") {
            let _ = writeln!(rejected, "    ({seed}, {text:?}, {expanded_text:?}),");
            continue;
        }
        let file: syn::File = match syn::parse2(expanded) {
            Ok(f) => f,
            Err(e) => panic!("the expansion of model {seed} does not parse ({e})"),
        };
        let mut sigs = Vec::new();
        signatures(&file.items, &mut sigs);
        let args_of = |name: &str| -> Option<String> {
            let (_, args) = sigs.iter().find(|(n, _)| n == name)?;
            let views: Vec<String> = args
                .iter()
                .map(|a| match spec.inputs.iter().position(|d| d.name == *a) {
                    // Index inputs (`as u32`) come from `u`, at the same position.
                    Some(k) if spec.inputs[k].bound.is_some() => format!("v(&u[{k}])"),
                    Some(k) => format!("v(&x[{k}])"),
                    None => panic!("model {seed}: `{name}` takes `{a}`, which is not an input"),
                })
                .collect();
            Some(views.join(", "))
        };
        let grads_args = args_of("compute_gradients").unwrap_or_else(|| panic!("model {seed}: no compute_gradients"));
        let loss_args = args_of("l").unwrap_or_else(|| panic!("model {seed}: no loss fetch"));
        let set: String = spec
            .params
            .iter()
            .enumerate()
            .map(|(k, p)| {
                format!("        m.{} = p[{k}].clone().into_dimensionality().expect(\"param rank\");\n", p.name)
            })
            .collect();
        let trainable: Vec<String> =
            spec.params.iter().filter(|p| !p.frozen).map(|p| format!("g.{}.into_dyn()", p.name)).collect();
        let metric = match (&spec.metric, args_of("acc")) {
            (Some(_), Some(a)) => format!("Some(m.acc({a}).map_err(|e| e.to_string()))"),
            _ => "None".to_string(),
        };
        let _ = write!(
            out,
            "pub mod m{i} {{\n    use super::*;\n    ::modelc::model! {{\n{text}    }}\n\
             \x20   pub fn run(x: &[ArrayViewD<'_, f32>], u: &[ArrayViewD<'_, u32>], p: &[ArrayD<f32>]) -> Outcome {{\n\
             \x20       let mut m = M::new();\n{set}\
             \x20       let grads = m.compute_gradients({grads_args}).map(|(l, g)| (l, vec![{}])).map_err(|e| e.to_string());\n\
             \x20       let loss = m.l({loss_args}).map_err(|e| e.to_string());\n\
             \x20       let metric = {metric};\n\
             \x20       Outcome {{ grads, loss, metric }}\n    }}\n}}\n",
            trainable.join(", ")
        );
        let _ = writeln!(table, "    Entry {{ seed: {seed}, text: {text:?}, run: m{i}::run }},");
    }
    let all = format!(
        "/// The models, in seed order.\npub const MODELS: &[Entry] = &[\n{table}];\n\
         /// (seed, model text, expansion) of every model the compiler rejected.\n\
         pub const REJECTED: &[(u64, &str, &str)] = &[\n{rejected}];\n{out}"
    );
    let path = std::path::Path::new(&std::env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("models.rs");
    std::fs::write(&path, all).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
}
