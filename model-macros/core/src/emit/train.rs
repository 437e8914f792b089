//! The training functions: the fused plain-SGD `train_step` with its finiteness guard,
//! and `compute_gradients`, `apply_gradients`, `check_gradients` over the workspace.

use super::*;

/// How a plain-SGD `train_step` updates one param without materializing its gradient.
#[derive(Clone, Copy, Debug)]
pub(super) enum Update {
    /// `w += -lr * op(a) op(b)`: one gemm call accumulating into the param.
    MatMul { ta: bool, tb: bool, a: NodeId, b: NodeId },
    /// `b += -lr * sum_to(src)`: the bias update fused with its reduction.
    SumTo { src: NodeId },
    /// `p -= lr * grad`, from the gradient's buffer.
    Plain { grad: NodeId },
    /// `table[ids[i]] += -lr * src[i]`: an embedding table's update (the gradient of
    /// `gather`, a scatter-add) applied to the rows the batch uses only. The dense
    /// gradient would be a zeroed table-sized buffer, a guard pass and an update pass
    /// over all of it: 3 x 2.5 MB for a 10k x 64 table whose batch uses 400 rows.
    /// `bags`: the gradient of `gather_sum` (an embedding bag), each bag's row of `src`
    /// added into the rows of all its ids.
    Scatter { src: NodeId, ids: NodeId, bags: bool },
}

/// For plain SGD (no clipping, no weight decay), how each trainable param is updated.
/// A product or reduction reading a param is not fused, because params are updated one
/// after the other and must all be read before any changes.
pub(super) fn sgd_updates(c: &Compiled) -> Option<Vec<(usize, Update)>> {
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
                    Op::ScatterAdd { bags, .. } if not_param(node.inputs[0]) => {
                        Update::Scatter { src: node.inputs[0], ids: node.inputs[1], bags }
                    }
                    _ => Update::Plain { grad },
                };
                (p, update)
            })
            .collect(),
    )
}

/// `train_step` for plain SGD: forward and backward into its own workspace, each update
/// fused with its gradient's last op and run as early as it may (see [`update_order`]).
pub(super) fn fused_train_step(ctx: &Ctx, i: usize, p: &Program, updates: &[(usize, Update)]) -> TokenStream {
    let m = ctx.m;
    let params = input_params(ctx, p);
    let prologue = prologue(ctx, i, p);
    let lb = buf(p, m.train_loss_node().unwrap_or(0));
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
                        // The guard staged the updated param and checked it: swap it in.
                        ::modelc::__private::swap_in(&mut self.#n, &mut self.__state.gscratch[#j]);
                    } else {
                        #k::gemm_acc(-__lr, #a, #ta, #b, #tb, self.#n.view_mut());
                    }
                }
            }
            Update::SumTo { src } => {
                let s = view(ctx, p, src);
                quote!(#k::sum_to_acc(-__lr, #s.into_dyn(), self.#n.view_mut().into_dyn());)
            }
            Update::Scatter { src, ids, bags } => {
                let (s, i) = (view(ctx, p, src), view(ctx, p, ids));
                if bags {
                    quote!(#k::scatter_add_bags_acc(-__lr, #s.into_dyn(), #i.into_dyn(), self.#n.view_mut().into_dyn());)
                } else {
                    quote!(#k::scatter_add_acc(-__lr, #s.into_dyn(), #i.into_dyn(), self.#n.view_mut().into_dyn());)
                }
            }
            Update::Plain { grad } => {
                let g = view(ctx, p, grad);
                quote!(::modelc::__private::sgd_apply(self.#n.view_mut().into_dyn(), #g.into_dyn(), __lr);)
            }
        }
    };
    // Every update runs after the whole forward and backward pass, behind the guard: an
    // update must not start before every other one is known to be finite (see
    // `sgd_guard`). They keep `update_order`'s order: the most recently read param first.
    let order = update_order(&m.graph, p, updates);
    // The forward products that bound a weight gradient's operand as they read it (M1's
    // `x w` bounds `x` for `w += -lr x^T dz`), each into its own variable.
    let operands: Vec<NodeId> = updates
        .iter()
        .filter_map(|(_, u)| match *u {
            Update::MatMul { a, b, .. } => Some([a, b]),
            _ => None,
        })
        .flatten()
        .collect();
    let bounded: Vec<(NodeId, NodeId, Ident)> = program::bound_sites(ctx, p, &operands)
        .into_iter()
        .enumerate()
        .map(|(k, (product, x))| (product, x, format_ident!("__xb{}", k)))
        .collect();
    let vars: Vec<(NodeId, Ident)> = bounded.iter().map(|(product, _, v)| (*product, v.clone())).collect();
    let declare = bounded.iter().map(|(_, _, v)| quote!(let mut #v = ::core::primitive::f32::INFINITY;));
    let body = program::compute_steps_bounded(ctx, p, &vars);
    let applied: Vec<TokenStream> = order.iter().map(|&(_, i)| update(&updates[i])).collect();
    let bounds: Vec<(NodeId, Ident)> = bounded.iter().map(|(_, x, v)| (*x, v.clone())).collect();
    let guard = sgd_guard(ctx, p, updates, &bounds);
    let args = input_args(ctx, p);
    // Dropout: the masks are drawn in training mode; the exact path (and a failure)
    // rewinds the stream, so that the exact path draws the same masks and a failed step
    // changes nothing.
    let (mark, rewind) = if ctx.dropout {
        (
            quote!(let __train = true; let __pos = self.__state.dropout.position();),
            quote!(self.__state.dropout.rewind(__pos);),
        )
    } else {
        (TokenStream::new(), TokenStream::new())
    };
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
            #mark
            let __lr = match self.__state.optimizer.as_ref() {
                ::core::option::Option::Some(__o) => __o.learning_rate,
                ::core::option::Option::None => 0.0,
            };
            #(#declare)*
            #(#body)*
            #guard
            if __risky {
                // Finite operands large enough that a fused update might overflow: the
                // exact path computes the gradients and checks them before any change.
                #rewind
                return self.__train_step_exact(#(#args),*);
            }
            #(#applied)*
            self.__state.global_step += 1;
            ::core::result::Result::Ok(__ws.#lb[()])
        }
    }
}

/// A forward product's bound of an operand (the OR of its elements' bits) is used by
/// the guard only below this (2^32): the OR can exceed the largest `|v|` by far (values
/// on both sides of 2 OR to 2^124 or to an infinity), and a loose bound would send the
/// step down the slow exact path; above it the update is staged and checked instead.
const FORWARD_BOUND_MAX: f32 = 4_294_967_296.0;

/// The guard of the fused SGD updates: the largest `|v|` of each distinct operand (one
/// vectorized pass each; an input view is read in place), then `sgd_guard`'s bound per
/// param. Sets `__risky`, or returns `Err(NonFinite)` before anything was written.
///
/// `bounded` holds `(operand, variable)` for the operands that a forward product bounded
/// as it read them (`kernels::matmul_act_bound`): where that bound is below
/// [`FORWARD_BOUND_MAX`] it stands for the operand's largest `|v|`, and an update that
/// would be staged for its operand's size (see below) runs in place instead.
pub(super) fn sgd_guard(
    ctx: &Ctx,
    p: &Program,
    updates: &[(usize, Update)],
    bounded: &[(NodeId, Ident)],
) -> TokenStream {
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
            Update::SumTo { src } | Update::Scatter { src, .. } => note(src),
            Update::Plain { grad } => note(grad),
        }
    }
    let max_of = |id: NodeId| format_ident!("__max{}", operands.iter().position(|&o| o == id).unwrap_or(0));
    let limit = FORWARD_BOUND_MAX;
    // A weight gradient whose operands are larger than twice the weight (the tutorial's
    // `x^T dz`: x is 78,400 floats, w 7,840) is cheaper to stage and check than to bound
    // from its operands: the update is computed out of place into scratch (`gemm_from`,
    // which reads `w` where the fused product would), checked there (31 KB, in L1,
    // instead of 313 KB of `x`), and the scratch swapped in for `w`. Decided per call,
    // from the sizes.
    let decide = updates.iter().enumerate().map(|(j, (param, u))| {
        let mat = format_ident!("__mat{}", j);
        let n = &m.params[*param].name;
        match *u {
            Update::MatMul { a, b, .. } => {
                let (av, bv) = (view(ctx, p, a), view(ctx, p, b));
                let known = bounded.iter().filter(|(x, _)| *x == a || *x == b).map(|(_, v)| v);
                quote!(let #mat = #av.len() + #bv.len() > 2 * self.#n.len() #(&& !(#known < #limit))*;)
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
                Update::SumTo { src } | Update::Scatter { src, .. } => src == id,
                Update::Plain { grad } => grad == id,
            };
            let mat = format_ident!("__mat{}", j);
            reads.then(|| quote!(!#mat))
        });
        match bounded.iter().find(|(x, _)| *x == id) {
            Some((_, var)) => quote! {
                let #n = if #var < #limit {
                    #var
                } else if false #(|| #users)* {
                    ::modelc::__private::max_abs(#v)
                } else {
                    0.0
                };
            },
            None => quote!(let #n = if false #(|| #users)* { ::modelc::__private::max_abs(#v) } else { 0.0 };),
        }
    });
    let materialize = updates.iter().enumerate().filter_map(|(j, (param, u))| {
        let Update::MatMul { ta, tb, a, b } = *u else { return None };
        let (av, bv) = (view(ctx, p, a), view(ctx, p, b));
        let mat = format_ident!("__mat{}", j);
        let gmax = format_ident!("__gmax{}", j);
        let n = &m.params[*param].name;
        Some(quote! {
            let #gmax = if #mat {
                // The updated param staged out of place (`w - lr op(a) op(b)`, the bits
                // of the fused update) and its largest |v| (in L1 now), checked by the
                // guard and swapped in after it.
                let __g = &mut self.__state.gscratch[#j];
                __g.resize(self.#n.len(), 0.0);
                ::modelc::__private::kernels::gemm_from(
                    -__lr, #av, #ta, #bv, #tb,
                    self.#n.view(),
                    ::modelc::ndarray::ArrayViewMut2::from_shape(self.#n.raw_dim(), &mut __g[..]).expect("sized just now"),
                );
                ::modelc::__private::max_abs_slice(__g)
            } else {
                0.0
            };
        })
    });
    let materialize: Vec<TokenStream> = materialize.collect();
    let n_updates = updates.len();
    let fail = if ctx.dropout {
        quote!(.map_err(|__e| {
            self.__state.dropout.rewind(__pos);
            __e
        }))
    } else {
        TokenStream::new()
    };
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
                // Staged: the new param's largest |v|, with nothing left to bound (a
                // factor of 0). Else the bound from the operands; an empty operand makes
                // the product 0 (or empty).
                quote! {
                    if #mat {
                        (#name, 1.0, [#gmax, 0.0])
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
            Update::Scatter { src, ids, .. } => {
                // One element of the table sums at most one row of `src` per id.
                let (sv, iv) = (view(ctx, p, src), view(ctx, p, ids));
                let ms = max_of(src);
                quote!((#name, if #sv.is_empty() { 0.0 } else { #iv.len() as f64 }, [#ms, 1.0]))
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
        let __risky = ::modelc::__private::sgd_guard(__lr, &[#(#bounds),*])#fail?;
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
pub(super) fn update_order(
    g: &crate::ir::Graph,
    p: &Program,
    updates: &[(usize, Update)],
) -> Vec<(Option<usize>, usize)> {
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
                Update::Scatter { src, ids, .. } => vec![src, ids],
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

pub(super) fn train_fns(ctx: &Ctx, i: usize, p: &Program, with_train_step: bool) -> TokenStream {
    let m = ctx.m;
    let c = ctx.c;
    let grads_ty = &ctx.grads_ty;
    let params = input_params(ctx, p);
    let args = input_args(ctx, p);
    let prologue = prologue(ctx, i, p);
    let body = compute(ctx, p);
    let loss = m.train_loss_node().unwrap_or(0);
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
    // Dropout: `__forward_backward` takes the mode (masks drawn, or ones for
    // `check_gradients`), and a training step that fails after drawing rewinds the stream.
    let (mode_param, train_arg) =
        if ctx.dropout { (quote!(__train: bool,), quote!(true,)) } else { (TokenStream::new(), TokenStream::new()) };
    let exact_body = if ctx.dropout {
        quote! {
            let __pos = self.__state.dropout.position();
            let __r = self.__forward_backward(true, #(#args),*).and_then(|__loss| self.__update_from_workspace().map(|()| __loss));
            if __r.is_err() {
                self.__state.dropout.rewind(__pos);
            }
            __r
        }
    } else {
        quote! {
            let __loss = self.__forward_backward(#(#args),*)?;
            self.__update_from_workspace()?;
            ::core::result::Result::Ok(__loss)
        }
    };
    let check_grads = if ctx.dropout {
        quote! {
            // Inference mode: every mask is ones, as in the `loss` fetch probed below.
            self.__forward_backward(false, #(#args),*)?;
            let (__loss, __g) = {
                let __ws = match self.__state.#ws.as_ref() {
                    ::core::option::Option::Some((_, __w)) => __w,
                    ::core::option::Option::None => unreachable!("the workspace was just filled"),
                };
                (__ws.#lb[()], #grads_ty { #(#tnames: __ws.#gbufs.clone(),)* })
            };
        }
    } else {
        quote!(let (__loss, __g) = self.compute_gradients(#(#args),*)?;)
    };
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
        fn __forward_backward(&mut self, #mode_param #(#params),*) -> ::core::result::Result<f32, ::modelc::Error> {
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
            #exact_body
        }

        #train_step

        /// The loss and its gradient for every trainable param (the first half of
        /// TensorFlow's `minimize`). Allocates the returned gradients; see
        /// [`Self::compute_gradients_into`] for the allocation-free form.
        pub fn compute_gradients(&mut self, #(#params),*) -> ::core::result::Result<(f32, #grads_ty), ::modelc::Error> {
            let __loss = self.__forward_backward(#train_arg #(#args),*)?;
            let __ws = match self.__state.#ws.as_ref() {
                ::core::option::Option::Some((_, __w)) => __w,
                ::core::option::Option::None => unreachable!("the workspace was just filled"),
            };
            ::core::result::Result::Ok((__loss, #grads_ty { #(#tnames: __ws.#gbufs.clone(),)* }))
        }

        /// Like [`Self::compute_gradients`], writing into `gradients` (no allocation).
        pub fn compute_gradients_into(&mut self, #(#params,)* gradients: &mut #grads_ty) -> ::core::result::Result<f32, ::modelc::Error> {
            ::modelc::__private::check_gradient_shapes(&[#((#tstrs, gradients.#tnames.shape(), #tdims)),*])?;
            let __loss = self.__forward_backward(#train_arg #(#args),*)?;
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
            #check_grads
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
