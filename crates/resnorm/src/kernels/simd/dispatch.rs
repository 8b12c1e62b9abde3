//! [`dispatch!`]: how a kernel reaches its instruction set (all but the 3x3 convolution, which
//! keeps per-level wrappers of its own). It defines a function that
//! runs a body compiled three times, with AVX-512F, with AVX2 and FMA, and plainly, and calls
//! the copy for [`level`](super::level) (so `RESNORM_SIMD` caps every kernel alike).
//!
//! Two forms:
//! - `=> body` for a body generic over [`Vector`](super::Vector): it runs as `body::<Avx512>`,
//!   `body::<Avx2>` or `body::<Scalar>` (`unsafe fn` for an unsafe body, whose contract the
//!   defined function takes over);
//! - `=> auto body` for element-wise loops written on `f32` that the compiler vectorizes:
//!   the same `body` in each copy, with registers as wide as the copy's instruction set.
//!
//! The body must be `#[inline(always)]`, so that it is compiled inside each copy. Within it, a
//! register-tiled kernel runs in a function of its own through
//! [`Vector::compiled`](super::Vector::compiled) and a [`Kernel`].
//!
//! ```text
//! simd::dispatch! {
//!     /// `Σ x²` over one row.
//!     pub(crate) fn sum_sq(x: &[f32]) -> f32 => sum_sq_with
//! }
//! #[inline(always)]
//! fn sum_sq_with<V: Vector>(x: &[f32]) -> f32 { /* ... */ }
//! ```

/// Defines `fn $name(args) -> ret` running `$body` at [`level`](super::level); see the module
/// documentation.
macro_rules! dispatch {
    ($(#[$meta:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)?
        => auto $body:path) => {
        $crate::kernels::simd::dispatch!(@define [$(#[$meta])*] [] $vis $name [$($arg: $ty),*]
            [$($ret)?] [$body] [$body] [$body]);
    };
    ($(#[$meta:meta])* $vis:vis unsafe fn $name:ident($($arg:ident: $ty:ty),* $(,)?)
        $(-> $ret:ty)? => $body:ident) => {
        $crate::kernels::simd::dispatch!(@generic [$(#[$meta])*] [unsafe] $vis $name
            [$($arg: $ty),*] [$($ret)?] $body);
    };
    ($(#[$meta:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)?
        => $body:ident) => {
        $crate::kernels::simd::dispatch!(@generic [$(#[$meta])*] [] $vis $name
            [$($arg: $ty),*] [$($ret)?] $body);
    };
    (@generic [$(#[$meta:meta])*] [$($unsafety:tt)?] $vis:vis $name:ident
        [$($arg:ident: $ty:ty),*] [$($ret:ty)?] $body:ident) => {
        $crate::kernels::simd::dispatch!(@define [$(#[$meta])*] [$($unsafety)?] $vis $name
            [$($arg: $ty),*] [$($ret)?]
            [$body::<$crate::kernels::simd::Avx512>]
            [$body::<$crate::kernels::simd::Avx2>]
            [$body::<$crate::kernels::simd::Scalar>]);
    };
    (@define [$(#[$meta:meta])*] [$($unsafety:tt)?] $vis:vis $name:ident
        [$($arg:ident: $ty:ty),*] [$($ret:ty)?]
        [$($avx512:tt)*] [$($avx2:tt)*] [$($scalar:tt)*]) => {
        $(#[$meta])*
        #[inline]
        $vis $($unsafety)? fn $name($($arg: $ty),*) $(-> $ret)? {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f")]
                unsafe fn with_avx512($($arg: $ty),*) $(-> $ret)? {
                    $($avx512)*($($arg),*)
                }
                #[target_feature(enable = "avx2,fma")]
                unsafe fn with_avx2($($arg: $ty),*) $(-> $ret)? {
                    $($avx2)*($($arg),*)
                }
                match $crate::kernels::simd::level() {
                    // SAFETY: the level never exceeds what the CPU has (`Level::detected`).
                    $crate::kernels::simd::Level::Avx512 => return unsafe { with_avx512($($arg),*) },
                    // SAFETY: as above.
                    $crate::kernels::simd::Level::Avx2 => return unsafe { with_avx2($($arg),*) },
                    $crate::kernels::simd::Level::Scalar => {}
                }
            }
            $($scalar)*($($arg),*)
        }
    };
}
pub(crate) use dispatch;

/// A kernel body that [`Vector::compiled`](super::Vector::compiled) runs in a function of its
/// own, compiled for the vector's instruction set: its arguments, and `run` calling the body.
pub(crate) trait Kernel {
    /// What the body returns.
    type Output;
    /// Calls the body; `#[inline(always)]` in every implementation, so that the body is
    /// compiled inside the vector's function.
    ///
    /// # Safety
    /// The contract of the body.
    unsafe fn run(self) -> Self::Output;
}

/// Test support: evaluates `$body` once for every level the CPU has, narrowest first, with
/// the type `$v` naming that level's [`Vector`](super::Vector) and `$level` the level, so that
/// a test compares every instance of a generic body with its reference.
#[cfg(test)]
macro_rules! each_level {
    (|$v:ident, $level:ident| $body:expr) => {{
        {
            type $v = $crate::kernels::simd::Scalar;
            let $level = $crate::kernels::simd::Level::Scalar;
            $body;
        }
        #[cfg(target_arch = "x86_64")]
        if $crate::kernels::simd::Level::detected() >= $crate::kernels::simd::Level::Avx2 {
            type $v = $crate::kernels::simd::Avx2;
            let $level = $crate::kernels::simd::Level::Avx2;
            $body;
        }
        #[cfg(target_arch = "x86_64")]
        if $crate::kernels::simd::Level::detected() >= $crate::kernels::simd::Level::Avx512 {
            type $v = $crate::kernels::simd::Avx512;
            let $level = $crate::kernels::simd::Level::Avx512;
            $body;
        }
    }};
}
#[cfg(test)]
pub(crate) use each_level;

#[cfg(test)]
mod tests {
    use crate::kernels::simd::{level, Level, Vector};

    dispatch! {
        /// The name of the vector type the dispatched copy runs with.
        fn vector_in_force() -> &'static str => vector_name
    }

    #[inline(always)]
    fn vector_name<V: Vector>() -> &'static str {
        std::any::type_name::<V>()
    }

    /// The copy that runs is the one for `level()`, cap included (CI runs this under each).
    #[test]
    fn runs_the_copy_for_the_level_in_force() {
        let want = match level() {
            Level::Scalar => "::Scalar",
            Level::Avx2 => "::Avx2",
            Level::Avx512 => "::Avx512",
        };
        assert!(vector_in_force().ends_with(want), "{}", vector_in_force());
    }
}
