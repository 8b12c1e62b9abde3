//! Least-squares line fits for the findings: slopes on log-log axes, linear growth.
//!
//! ```
//! use resnorm::study::{fit_line, log_log_slope};
//! let fit = fit_line(&[(0.0, 1.0), (1.0, 3.0), (2.0, 5.0)]).unwrap();
//! assert!((fit.slope - 2.0).abs() < 1e-12 && (fit.intercept - 1.0).abs() < 1e-12);
//! assert!((fit.r_squared - 1.0).abs() < 1e-12);
//! // y = 1/√x on log-log axes has slope −1/2.
//! let pts: Vec<(f64, f64)> = [6.0f64, 12.0, 24.0].iter().map(|&x| (x, x.powf(-0.5))).collect();
//! assert!((log_log_slope(&pts).unwrap() + 0.5).abs() < 1e-12);
//! assert!(fit_line(&[(1.0, 1.0)]).is_none());
//! ```

use serde::{Deserialize, Serialize};

/// `y ≈ intercept + slope·x`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct LineFit {
    /// Slope.
    pub slope: f64,
    /// Value at `x = 0`.
    pub intercept: f64,
    /// Coefficient of determination (1 for points on a line; 1 also when `y` is constant).
    pub r_squared: f64,
}

/// The least-squares line through `points`; `None` with fewer than two distinct `x`.
pub fn fit_line(points: &[(f64, f64)]) -> Option<LineFit> {
    let n = points.len() as f64;
    let mean_x = points.iter().map(|p| p.0).sum::<f64>() / n;
    let mean_y = points.iter().map(|p| p.1).sum::<f64>() / n;
    let sxx: f64 = points.iter().map(|p| (p.0 - mean_x).powi(2)).sum();
    let sxy: f64 = points.iter().map(|p| (p.0 - mean_x) * (p.1 - mean_y)).sum();
    let syy: f64 = points.iter().map(|p| (p.1 - mean_y).powi(2)).sum();
    if points.len() < 2 || sxx <= 0.0 || !sxx.is_finite() || !syy.is_finite() {
        return None;
    }
    let slope = sxy / sxx;
    let r_squared = if syy == 0.0 {
        1.0
    } else {
        sxy * sxy / (sxx * syy)
    };
    Some(LineFit {
        slope,
        intercept: mean_y - slope * mean_x,
        r_squared,
    })
}

/// Slope of `ln y` against `ln x`: the exponent `a` of `y ∝ xᵃ`. `None` when a value is not
/// positive or fewer than two points remain.
pub fn log_log_slope(points: &[(f64, f64)]) -> Option<f64> {
    if points.iter().any(|&(x, y)| !(x > 0.0 && y > 0.0)) {
        return None;
    }
    let logs: Vec<(f64, f64)> = points.iter().map(|&(x, y)| (x.ln(), y.ln())).collect();
    fit_line(&logs).map(|f| f.slope)
}
