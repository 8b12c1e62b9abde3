//! A model's parameters as the `&mut [&mut Param]` slice that optimizers, clipping and
//! checkpoint loading take.
//!
//! [`Gpt::visit_params_mut`] lends one parameter at a time; [`with_params_mut`] moves every
//! parameter out (no element is copied: only the `Vec` headers move), hands the slice to `f`,
//! and moves them back in the same order.

use crate::models::gpt::Gpt;
use crate::nn::{Param, ParamKind};

/// Runs `f` on all of `model`'s parameters in [`Gpt::visit_params`] order.
pub fn with_params_mut<R>(model: &mut Gpt, f: impl FnOnce(&mut [&mut Param]) -> R) -> R {
    let mut owned = Vec::new();
    model.visit_params_mut(&mut |p| {
        owned.push(std::mem::replace(
            p,
            Param::zeros(String::new(), vec![0], ParamKind::Weight),
        ))
    });
    let mut refs: Vec<&mut Param> = owned.iter_mut().collect();
    let result = f(&mut refs);
    let mut back = owned.into_iter();
    model.visit_params_mut(&mut |p| {
        *p = back
            .next()
            .expect("the model has the same parameters as a moment ago");
    });
    result
}
