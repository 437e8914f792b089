//! The functions every model has: constructors, initializers, the optimizer, variables,
//! `explain`, `graph_dot`, `cost`, `save` and `load`.

use super::*;

pub(super) fn init_tokens(init: InitSpec) -> TokenStream {
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

pub(super) fn optimizer_tokens(m: &Model) -> TokenStream {
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

pub(super) fn common_fns(ctx: &Ctx, programs: &[(String, Program)], train: Option<&Program>) -> TokenStream {
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
    // `explain`, `graph_dot` and `cost` take no `self` (their answers are fixed at
    // compile time): the docs say so with the call a user writes, `Model::cost(batch)`.
    let cost_call = format!("{name_str}::cost({})", m.symbols.join(", "));
    let cost_doc = if m.symbols.is_empty() {
        format!(
            "What the model costs: FLOPs per fetch and per `train_step`, and memory. An associated function (no model value needed): `{cost_call}`. Every count saturates at `u64::MAX` (see `modelc::Cost`)."
        )
    } else {
        format!(
            "What the model costs for these values of its symbolic dimensions ({}): FLOPs per fetch and per `train_step`, and memory. An associated function (no model value needed): `{cost_call}`. Every count saturates at `u64::MAX` instead of overflowing (see `modelc::Cost`).",
            m.symbols.join(", ")
        )
    };
    let explain_doc = format!(
        "The forward program, the rewrites the compiler made, and the derived gradients, as text fixed at compile time. An associated function (no model value needed): `{name_str}::explain()`."
    );
    let dot_doc = format!(
        "The simplified graph (forward and backward) in Graphviz's dot language, fixed at compile time. An associated function (no model value needed): `{name_str}::graph_dot()`; draw it with `dot -Tsvg -o graph.svg` (`apt-get install graphviz`)."
    );
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
    // Dropout: the random stream, seeded by `with_seed`, cloned, saved and loaded as the
    // tensor `random/dropout_stream` (see docs/checkpoints.md).
    let (stream_new, stream_clone, stream_save, stream_expect, stream_load) = if ctx.dropout {
        (
            quote!(dropout: ::modelc::__private::random::DropoutStream::new(seed),),
            quote!(dropout: other.__state.dropout.clone(),),
            quote! {
                let __stream = self.__state.dropout.to_words();
                __tensors.push(::modelc::__private::checkpoint::TensorData {
                    name: ::std::string::String::from("random/dropout_stream"),
                    shape: ::std::vec![::modelc::__private::random::STATE_WORDS],
                    data: ::std::borrow::Cow::Owned(__stream.to_vec()),
                });
            },
            quote!(__expected.push((::std::string::String::from("random/dropout_stream"), ::std::vec![::modelc::__private::random::STATE_WORDS]));),
            quote! {
                let mut __words = [0f32; ::modelc::__private::random::STATE_WORDS];
                ::modelc::__private::take_into(&mut __ck, "random/dropout_stream", &mut __words, __path)?;
                __m.__state.dropout = ::modelc::__private::random::DropoutStream::from_words(&__words)
                    .map_err(|message| ::modelc::Error::Checkpoint { path: __path.to_path_buf(), message })?;
            },
        )
    } else {
        (TokenStream::new(), TokenStream::new(), TokenStream::new(), TokenStream::new(), TokenStream::new())
    };
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
                    #stream_new
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
                    #stream_clone
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

        #[doc = #explain_doc]
        pub fn explain() -> &'static str {
            #explain_text
        }

        #[doc = #dot_doc]
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
            let __tensors = self.__checkpoint_tensors()?;
            ::modelc::__private::checkpoint::save(path.as_ref(), #name_str, self.__state.global_step, &__tensors)
        }

        /// Everything a checkpoint holds, as its tensors (`save`, and the in-memory
        /// checkpoint `modelc::mpi::World::broadcast_params` sends).
        fn __checkpoint_tensors(&self) -> ::core::result::Result<::std::vec::Vec<::modelc::__private::checkpoint::TensorData<'_>>, ::modelc::Error> {
            // A param in any layout (the fields are public): its logical values, copied
            // only if it is not in standard layout; another shape is an error.
            let mut __tensors = ::std::vec![#(::modelc::__private::checkpoint::TensorData::param(#pstrs, &self.#pnames, #all_dims_tok)?),*];
            #save_slots
            #stream_save
            ::core::result::Result::Ok(__tensors)
        }

        /// Loads a model saved by [`Self::save`]: params, optimizer slots and global step,
        /// so that training resumes exactly. Every name, dtype and shape is checked; the
        /// error names what differs.
        pub fn load(path: impl ::core::convert::AsRef<::std::path::Path>) -> ::core::result::Result<Self, ::modelc::Error> {
            let __path = path.as_ref();
            let mut __m = Self::new();
            let __ck = ::modelc::__private::checkpoint::load(__path, #name_str, &__m.__checkpoint_expected())?;
            __m.__restore(__ck, __path)?;
            ::core::result::Result::Ok(__m)
        }

        /// The checkpoint's tensors (name and shape) for this model and optimizer.
        fn __checkpoint_expected(&self) -> ::std::vec::Vec<(::std::string::String, ::std::vec::Vec<usize>)> {
            let mut __expected: ::std::vec::Vec<(::std::string::String, ::std::vec::Vec<usize>)> =
                ::std::vec![#((::std::string::String::from(#pstrs), (#all_dims_tok).to_vec())),*];
            if let ::core::option::Option::Some(__opt) = self.__state.optimizer.as_ref() {
                let __trainable: [(&str, &[usize]); #n_trainable] = [#((#tstrs, #tdims_tok)),*];
                for (__pname, __dims) in __trainable {
                    for __slot in __opt.slot_names() {
                        __expected.push((::modelc::__private::slot_name(__pname, __slot), __dims.to_vec()));
                    }
                }
            }
            #stream_expect
            __expected
        }

        /// Copies a validated checkpoint into `self` (a fresh model: on `Err` part of it
        /// may be written).
        fn __restore(&mut self, mut __ck: ::modelc::__private::checkpoint::Checkpoint, __path: &::std::path::Path) -> ::core::result::Result<(), ::modelc::Error> {
            let __m = self;
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
            #stream_load
            __m.__state.global_step = __ck.global_step;
            ::core::result::Result::Ok(())
        }
    }
}

/// How many slots of a param's size the optimizer keeps.
pub(super) fn slot_count(kind: OptimizerKind) -> u64 {
    match kind {
        OptimizerKind::Sgd => 0,
        OptimizerKind::Momentum { .. } | OptimizerKind::Adagrad { .. } => 1,
        OptimizerKind::Adam { .. } => 2,
        OptimizerKind::RmsProp { momentum, centered, .. } => 1 + u64::from(momentum > 0.0) + u64::from(centered),
    }
}

/// FLOPs of one program as a `u64` expression of `__d`.
pub(super) fn program_flops(ctx: &Ctx, p: &Program) -> TokenStream {
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
            Op::Conv2d(c) | Op::Conv2dGradInput(c) | Op::Conv2dGradFilter(c) => {
                // Each pass is the same product: 2 * n * oh * ow * co * kh * kw * ci.
                let n = dim_tokens(ctx.m, &g.shape(node.inputs[0]).0[0]);
                c.flops(n)
            }
            // The fused conv + pool's value: the conv's product and a compare per window
            // cell per pooled element (the argmax, computed with it, counts 0).
            Op::ConvPool(c) => {
                let n = dim_tokens(ctx.m, &g.shape(node.inputs[0]).0[0]);
                let (conv, out) = (c.conv.flops(n), numel_tokens(ctx.m, &node.shape));
                quote!(#conv.saturating_add(#out.saturating_mul(#per)))
            }
            // An embedding bag and its scatter: one add per id per row element.
            Op::GatherSum | Op::ScatterAdd { bags: true, .. } => {
                let ids = numel_tokens(ctx.m, g.shape(node.inputs[1]));
                // The row: the table's (`[v, d..]`), which the scatter writes.
                let table = if matches!(node.op, Op::GatherSum) { g.shape(node.inputs[0]) } else { &node.shape };
                let d = numel_tokens(ctx.m, &table.without_axis(0));
                quote!(#ids.saturating_mul(#d))
            }
            // Pooling gradients: per element of the adjoint (the pooled shape), not of
            // the image they write.
            Op::Sum { .. }
            | Op::Max { .. }
            | Op::Argmax { .. }
            | Op::SumTo(_)
            | Op::SoftmaxXent
            | Op::MaxPoolGrad(_)
            | Op::AvgPoolGrad(_) => {
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

/// The traits `modelc::mpi::World` reads a model and its gradients through (data-parallel
/// training): the gradients' fields in declaration order, and the model's state as its
/// checkpoint's bytes, so that the runtime needs no per-model code.
pub(super) fn replica_impls(ctx: &Ctx) -> TokenStream {
    let m = ctx.m;
    let (name, grads_ty) = (ctx.name, &ctx.grads_ty);
    let name_str = name.to_string();
    let trainable = m.trainable();
    let gfields: Vec<&Ident> = trainable.iter().map(|&p| &m.params[p].name).collect();
    let gstrs: Vec<String> = gfields.iter().map(|n| n.to_string()).collect();
    let gdims: Vec<TokenStream> = trainable
        .iter()
        .map(|&p| {
            let d = m.params[p].dims.iter().map(|&d| usize_lit(d));
            quote!(&[#(#d),*])
        })
        .collect();
    let idx: Vec<usize> = (0..gfields.len()).collect();
    let shard = if ctx.dropout { quote!(self.__state.dropout.set_shard(rank, ranks);) } else { TokenStream::new() };
    let view = quote!(::modelc::ndarray::ArrayViewD<'_, f32>);
    let view_mut = quote!(::modelc::ndarray::ArrayViewMutD<'_, f32>);
    let res = quote!(::core::result::Result);
    quote! {
        #[allow(unused_variables)]
        impl ::modelc::mpi::Gradients for #grads_ty {
            const MODEL: &'static str = #name_str;
            const LAYOUT: &'static [(&'static str, &'static [usize])] = &[#((#gstrs, #gdims)),*];
            fn visit(&self, f: &mut dyn FnMut(usize, #view)) {
                #(f(#idx, self.#gfields.view().into_dyn());)*
            }
            fn visit_mut(&mut self, f: &mut dyn FnMut(usize, #view_mut)) {
                #(f(#idx, self.#gfields.view_mut().into_dyn());)*
            }
        }

        #[allow(unused_variables)]
        impl ::modelc::mpi::Replica for #name {
            type Grads = #grads_ty;
            fn state_bytes(&self) -> #res<::std::vec::Vec<u8>, ::modelc::Error> {
                let __tensors = self.__checkpoint_tensors()?;
                let __path = ::std::path::Path::new("(in memory)");
                ::modelc::__private::checkpoint::to_bytes(__path, #name_str, self.__state.global_step, &__tensors)
            }
            fn restore_state_bytes(&mut self, bytes: &[u8]) -> #res<(), ::modelc::Error> {
                let __path = ::std::path::Path::new("(rank 0's broadcast)");
                let mut __m = Self::new();
                __m.__state.optimizer = self.__state.optimizer;
                let __ck = ::modelc::__private::checkpoint::from_bytes(bytes, __path, #name_str, &__m.__checkpoint_expected())?;
                __m.__restore(__ck, __path)?;
                *self = __m;
                #res::Ok(())
            }
            fn replica_learning_rate(&self) -> f32 {
                self.__state.optimizer.as_ref().map_or(0.0, |o| o.learning_rate)
            }
            fn set_replica_learning_rate(&mut self, learning_rate: f32) {
                if let ::core::option::Option::Some(o) = self.__state.optimizer.as_mut() {
                    o.learning_rate = learning_rate;
                }
            }
            fn set_shard(&mut self, rank: usize, ranks: usize) {
                #shard
            }
            fn apply_scaled(&mut self, __sum: &#grads_ty, __scale: f32, __largest: ::core::option::Option<f64>) -> #res<(), ::modelc::Error> {
                ::modelc::__private::check_gradient_shapes(&[#((#gstrs, __sum.#gfields.shape(), #gdims)),*])?;
                #(let #gfields = __sum.#gfields.as_standard_layout();)*
                let __opt = match self.__state.optimizer.as_ref() {
                    ::core::option::Option::Some(__o) => __o,
                    ::core::option::Option::None => return #res::Ok(()),
                };
                ::modelc::__private::apply_updates_scaled(
                    __opt,
                    &mut self.__state.global_step,
                    &mut self.__state.slots,
                    &mut [#(::modelc::__private::slice_mut(&mut self.#gfields)),*],
                    &[#(::modelc::__private::slice(&#gfields)),*],
                    &[#(#gstrs),*],
                    __scale,
                    __largest,
                )
            }
        }
    }
}
