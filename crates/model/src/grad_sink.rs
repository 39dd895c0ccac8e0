//! Parameter gradients handed straight to the gradient store.
//!
//! candle's backward pass adds every gradient an op returns into the store through
//! `or_insert` — a `zeros_like` of the parameter — and an `add` that allocates a third
//! tensor: for a 1024 × 1024 weight, 12 MB written and 8 MB read per step to store 4 MB
//! (../shared/bench/CPU-PROFILE.md). While [`backward`] runs, our ops' backward passes
//! ([`route`]) give the gradients of parameters (variables) to a sink on this thread instead
//! of to candle, and [`backward`] then puts each into the store as it is. The store that
//! comes back is the one `loss.backward()` gives, value for value.
//!
//! Outside [`backward`] (a user calling `loss.backward()` on our model's loss) no sink is
//! open and the ops return every gradient to candle as usual.

use std::cell::RefCell;

use candle_core::Tensor;
use candle_core::backprop::GradStore;

thread_local! {
    /// Open during [`backward`] on this thread: (parameter, its gradient) as the ops give them.
    static SINK: RefCell<Option<Vec<(Tensor, Tensor)>>> = const { RefCell::new(None) };
}

/// `loss.backward()`, with the gradients of parameters that our ops compute going into the
/// store without candle's zeros-then-add. A parameter that several ops (or candle's own ops
/// too) contribute to gets the sum.
pub(crate) fn backward(loss: &Tensor) -> candle_core::Result<GradStore> {
    /// Closes the sink even when the backward pass fails, and restores an outer one: a
    /// rayon thread waiting inside one backward pass's kernel may pick up another whole
    /// backward pass (another caller's, handed to the pool) and run it to the end first.
    struct Open(Option<Vec<(Tensor, Tensor)>>);
    impl Drop for Open {
        fn drop(&mut self) {
            let outer = self.0.take();
            SINK.with(|s| *s.borrow_mut() = outer);
        }
    }
    let _open = Open(SINK.with(|s| s.borrow_mut().replace(Vec::new())));
    let mut grads = loss.backward()?;
    let sunk = SINK.with(|s| s.borrow_mut().take()).unwrap_or_default();
    for (param, grad) in sunk {
        let grad = match grads.remove(&param) {
            Some(earlier) => (earlier + grad)?,
            None => grad,
        };
        grads.insert(&param, grad);
    }
    Ok(grads)
}

/// What an op's backward pass returns to candle for `param`: `None` when `param` is a
/// variable and [`backward`] is running on this thread (the sink took `grad`), else
/// `Some(grad)`. A parameter that is not a variable (a tensor computed from one) must go
/// back through candle's graph, so it always gets `Some`.
pub(crate) fn route(param: &Tensor, grad: Tensor) -> Option<Tensor> {
    if !param.is_variable() {
        return Some(grad);
    }
    SINK.with(|s| match s.borrow_mut().as_mut() {
        Some(sunk) => {
            sunk.push((param.clone(), grad));
            None
        }
        None => Some(grad),
    })
}
