//! Kept for the attention until it moves to `kernels/attention`: its prefetch hints, which
//! now live in [`simd`](super::simd).

pub(crate) use super::simd::{prefetch, prefetch_lines};
