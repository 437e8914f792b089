//! The generated `load_params` and `from_safetensors`: params from any safetensors file
//! (PyTorch, Keras, another modelc model) through a `modelc::NameMap`. The runtime half,
//! with the name map, the dtype conversions and the error listing every difference, is
//! `runtime/src/import.rs`.

use proc_macro2::TokenStream;
use quote::{format_ident, quote};

use crate::model::Model;

/// The two methods, for the model's `impl` block.
pub fn methods(m: &Model) -> TokenStream {
    let name_str = m.ident.to_string();
    let pnames: Vec<_> = m.params.iter().map(|p| &p.name).collect();
    let pstrs: Vec<String> = pnames.iter().map(|n| n.to_string()).collect();
    let locals: Vec<_> = pnames.iter().map(|n| format_ident!("__p_{}", n)).collect();
    let dims: Vec<TokenStream> = m
        .params
        .iter()
        .map(|p| {
            let d = p.dims.iter();
            quote!(&[#(#d),*])
        })
        .collect();
    let n = m.params.len();
    let import = quote!(::modelc::__private::import);
    quote! {
        /// Loads the params (only: the optimizer's slots and the global step are
        /// untouched) from a safetensors file written by anything: PyTorch
        /// (`safetensors.torch.save_file(model.state_dict(), path)`), Keras, JAX, or a
        /// modelc checkpoint (its optimizer slots are skipped).
        ///
        /// `map` says which tensor holds each param and which must be transposed
        /// (PyTorch's `nn.Linear.weight` is `[out, in]`, a `matmul(x, w)` param
        /// `[in, out]`: `NameMap::new().pytorch_linear("w1", "b1", "fc1")`); a param it
        /// does not name is read from the tensor of its own name. F16 and BF16 tensors are
        /// widened exactly, F64 rounded to nearest; other dtypes are refused.
        ///
        /// The whole file is checked first: wrong names, shapes or dtypes, missing or
        /// unused tensors are one `Error::Checkpoint` listing every difference, and the
        /// model is unchanged. Every param gets a fresh array in standard layout.
        pub fn load_params(
            &mut self,
            path: impl ::core::convert::AsRef<::std::path::Path>,
            map: &::modelc::NameMap,
        ) -> ::core::result::Result<(), ::modelc::Error> {
            let __path = path.as_ref();
            let __params: [(&str, &[usize]); #n] = [#((#pstrs, #dims)),*];
            let mut __values = #import::read_params(__path, #name_str, &__params, map)?.into_iter();
            // Every array is built before any is assigned: an error leaves the model as it was.
            #(let #locals = #import::into_param(__values.next(), #pstrs, #dims, __path)?;)*
            #(self.#pnames = #locals;)*
            ::core::result::Result::Ok(())
        }

        /// A new model (fresh optimizer state, global step 0) whose params are loaded
        /// from a safetensors file written by anything, through `map`: see
        /// [`Self::load_params`]. To resume modelc training exactly, use [`Self::load`].
        pub fn from_safetensors(
            path: impl ::core::convert::AsRef<::std::path::Path>,
            map: &::modelc::NameMap,
        ) -> ::core::result::Result<Self, ::modelc::Error> {
            let mut __m = Self::new();
            __m.load_params(path, map)?;
            ::core::result::Result::Ok(__m)
        }
    }
}
