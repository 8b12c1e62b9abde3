//! Small self-contained SVG charts: line plots with linear or logarithmic axes, and bar
//! charts. No fonts, scripts or external files: the SVG is inlined into the report.

use std::fmt::Write;

/// Line colors (Tableau 10), in series order.
const COLORS: [&str; 10] = [
    "#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7",
    "#9c755f", "#bab0ac",
];
const WIDTH: f64 = 760.0;
const HEIGHT: f64 = 360.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 190.0;
const TOP: f64 = 34.0;
const BOTTOM: f64 = 48.0;

/// One line of a [`LinePlot`].
pub struct Series {
    /// Legend text.
    pub label: String,
    /// `(x, y)` points; non-finite ones (and non-positive ones on a log axis) are skipped.
    pub points: Vec<(f64, f64)>,
    /// Drawn dashed.
    pub dashed: bool,
}

impl Series {
    pub fn new(label: impl Into<String>, points: Vec<(f64, f64)>) -> Self {
        Series {
            label: label.into(),
            points,
            dashed: false,
        }
    }
}

/// Which scale an axis has.
#[derive(Clone, Copy, PartialEq)]
pub enum Scale {
    Linear,
    Log,
}

/// A line plot.
pub struct LinePlot {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub x_scale: Scale,
    pub y_scale: Scale,
    pub series: Vec<Series>,
}

/// One axis: its data range (in scale space) and how to map to pixels.
struct Axis {
    scale: Scale,
    lo: f64,
    hi: f64,
}

impl Axis {
    fn fit(scale: Scale, values: impl Iterator<Item = f64>) -> Axis {
        let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
        for v in values.filter_map(|v| to_scale(scale, v)) {
            lo = lo.min(v);
            hi = hi.max(v);
        }
        if !lo.is_finite() {
            (lo, hi) = (0.0, 1.0);
        }
        if hi - lo < 1e-12 {
            let pad = if lo == 0.0 { 1.0 } else { lo.abs() * 0.1 };
            (lo, hi) = (lo - pad, hi + pad);
        }
        if scale == Scale::Log {
            (lo, hi) = (lo.floor(), hi.ceil());
        } else {
            let pad = 0.05 * (hi - lo);
            (lo, hi) = (lo - pad, hi + pad);
        }
        Axis { scale, lo, hi }
    }

    /// Fraction 0..1 along the axis of data value `v`.
    fn frac(&self, v: f64) -> Option<f64> {
        to_scale(self.scale, v).map(|s| (s - self.lo) / (self.hi - self.lo))
    }

    /// Tick positions (data values) and labels.
    fn ticks(&self) -> Vec<(f64, String)> {
        match self.scale {
            Scale::Log => {
                let decades = (self.hi - self.lo) as i64;
                let step = (decades / 8).max(1);
                let mut ticks = Vec::new();
                let mut e = self.lo as i64;
                while e <= self.hi as i64 {
                    ticks.push((10f64.powi(e as i32), format_power(e)));
                    if decades <= 2 {
                        for m in [2.0, 5.0] {
                            let v = m * 10f64.powi(e as i32);
                            if v.log10() < self.hi {
                                ticks.push((v, format_number(v)));
                            }
                        }
                    }
                    e += step;
                }
                ticks
            }
            Scale::Linear => {
                let raw = (self.hi - self.lo) / 6.0;
                let magnitude = 10f64.powf(raw.log10().floor());
                let step = [1.0, 2.0, 5.0, 10.0]
                    .iter()
                    .map(|m| m * magnitude)
                    .find(|s| *s >= raw)
                    .unwrap_or(10.0 * magnitude);
                let mut v = (self.lo / step).ceil() * step;
                let mut ticks = Vec::new();
                while v <= self.hi + 1e-9 * step {
                    ticks.push((v, format_number(v)));
                    v += step;
                }
                ticks
            }
        }
    }
}

fn to_scale(scale: Scale, v: f64) -> Option<f64> {
    match scale {
        Scale::Linear if v.is_finite() => Some(v),
        Scale::Log if v.is_finite() && v > 0.0 => Some(v.log10()),
        _ => None,
    }
}

fn format_power(e: i64) -> String {
    match e {
        0 => "1".into(),
        1 => "10".into(),
        _ => format!("1e{e}"),
    }
}

fn format_number(v: f64) -> String {
    let a = v.abs();
    if a == 0.0 {
        "0".into()
    } else if !(1e-3..1e5).contains(&a) {
        format!("{v:.0e}")
    } else if a >= 100.0 {
        format!("{v:.0}")
    } else {
        let s = format!("{v:.3}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

/// Escapes text for SVG/HTML.
pub fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn open_svg(out: &mut String, title: &str) {
    let _ = write!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" font-family="sans-serif" font-size="12"><rect width="100%" height="100%" fill="white"/><text x="{}" y="20" text-anchor="middle" font-size="14" font-weight="bold">{}</text>"#,
        (LEFT + WIDTH - RIGHT) / 2.0,
        escape(title)
    );
}

impl LinePlot {
    /// The plot as an `<svg>` element.
    pub fn to_svg(&self) -> String {
        let all = || self.series.iter().flat_map(|s| s.points.iter());
        let x = Axis::fit(self.x_scale, all().map(|p| p.0));
        let y = Axis::fit(self.y_scale, all().map(|p| p.1));
        let (pw, ph) = (WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM);
        let px = |v: f64| x.frac(v).map(|f| LEFT + f * pw);
        let py = |v: f64| y.frac(v).map(|f| TOP + (1.0 - f) * ph);
        let mut out = String::new();
        open_svg(&mut out, &self.title);
        for (v, label) in x.ticks() {
            let Some(cx) = px(v) else { continue };
            let _ = write!(
                out,
                r##"<line x1="{cx:.1}" y1="{TOP}" x2="{cx:.1}" y2="{:.1}" stroke="#e6e6e6"/><text x="{cx:.1}" y="{:.1}" text-anchor="middle">{label}</text>"##,
                TOP + ph,
                TOP + ph + 16.0
            );
        }
        for (v, label) in y.ticks() {
            let Some(cy) = py(v) else { continue };
            let _ = write!(
                out,
                r##"<line x1="{LEFT}" y1="{cy:.1}" x2="{:.1}" y2="{cy:.1}" stroke="#e6e6e6"/><text x="{:.1}" y="{:.1}" text-anchor="end">{label}</text>"##,
                LEFT + pw,
                LEFT - 6.0,
                cy + 4.0
            );
        }
        let _ = write!(
            out,
            r##"<rect x="{LEFT}" y="{TOP}" width="{pw}" height="{ph}" fill="none" stroke="#444"/><text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text><text transform="translate(16 {:.1}) rotate(-90)" text-anchor="middle">{}</text>"##,
            LEFT + pw / 2.0,
            HEIGHT - 10.0,
            escape(&self.x_label),
            TOP + ph / 2.0,
            escape(&self.y_label)
        );
        for (i, s) in self.series.iter().enumerate() {
            let color = COLORS[i % COLORS.len()];
            let pts: Vec<(f64, f64)> = s
                .points
                .iter()
                .filter_map(|&(a, b)| Some((px(a)?, py(b)?)))
                .collect();
            let coords: Vec<String> = pts.iter().map(|(a, b)| format!("{a:.1},{b:.1}")).collect();
            let dash = if s.dashed {
                r#" stroke-dasharray="6 4""#
            } else {
                ""
            };
            let _ = write!(
                out,
                r#"<polyline fill="none" stroke="{color}" stroke-width="2"{dash} points="{}"/>"#,
                coords.join(" ")
            );
            if pts.len() <= 12 {
                for (a, b) in &pts {
                    let _ = write!(
                        out,
                        r#"<circle cx="{a:.1}" cy="{b:.1}" r="3" fill="{color}"/>"#
                    );
                }
            }
            let ly = TOP + 10.0 + 18.0 * i as f64;
            let lx = WIDTH - RIGHT + 12.0;
            let _ = write!(
                out,
                r#"<line x1="{lx}" y1="{ly}" x2="{}" y2="{ly}" stroke="{color}" stroke-width="3"{dash}/><text x="{}" y="{}">{}</text>"#,
                lx + 22.0,
                lx + 28.0,
                ly + 4.0,
                escape(&s.label)
            );
        }
        out.push_str("</svg>");
        out
    }
}

/// A bar chart of labeled values, bars starting at zero.
pub struct BarChart {
    pub title: String,
    pub y_label: String,
    pub bars: Vec<(String, f64)>,
}

impl BarChart {
    /// The chart as an `<svg>` element.
    pub fn to_svg(&self) -> String {
        let max = self
            .bars
            .iter()
            .map(|b| b.1)
            .filter(|v| v.is_finite())
            .fold(0.0, f64::max);
        let y = Axis {
            scale: Scale::Linear,
            lo: 0.0,
            hi: if max > 0.0 { max * 1.15 } else { 1.0 },
        };
        let (pw, ph) = (WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM);
        let mut out = String::new();
        open_svg(&mut out, &self.title);
        for (v, label) in y.ticks() {
            let cy = TOP + (1.0 - y.frac(v).unwrap_or(0.0)) * ph;
            let _ = write!(
                out,
                r##"<line x1="{LEFT}" y1="{cy:.1}" x2="{:.1}" y2="{cy:.1}" stroke="#e6e6e6"/><text x="{:.1}" y="{:.1}" text-anchor="end">{label}</text>"##,
                LEFT + pw,
                LEFT - 6.0,
                cy + 4.0
            );
        }
        let slot = pw / self.bars.len().max(1) as f64;
        for (i, (label, v)) in self.bars.iter().enumerate() {
            let h = y.frac(v.max(0.0)).unwrap_or(0.0) * ph;
            let (bx, by) = (LEFT + slot * (i as f64 + 0.2), TOP + ph - h);
            let color = COLORS[i % COLORS.len()];
            let _ = write!(
                out,
                r#"<path d="M{bx:.1},{:.1} V{by:.1} h{:.1} V{:.1} Z" fill="{color}"/><text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text><text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
                TOP + ph,
                slot * 0.6,
                TOP + ph,
                bx + slot * 0.3,
                by - 5.0,
                format_number(*v),
                bx + slot * 0.3,
                TOP + ph + 16.0,
                escape(label)
            );
        }
        let _ = write!(
            out,
            r##"<rect x="{LEFT}" y="{TOP}" width="{pw}" height="{ph}" fill="none" stroke="#444"/><text transform="translate(16 {:.1}) rotate(-90)" text-anchor="middle">{}</text></svg>"##,
            TOP + ph / 2.0,
            escape(&self.y_label)
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_plot_draws_every_series_with_its_points() {
        let plot = LinePlot {
            title: "t <1>".into(),
            x_label: "x".into(),
            y_label: "y".into(),
            x_scale: Scale::Log,
            y_scale: Scale::Log,
            series: vec![
                Series::new("a", vec![(6.0, 1.0), (12.0, 0.7), (24.0, 0.5)]),
                Series::new("b", vec![(6.0, 0.0), (12.0, 0.05), (24.0, f64::NAN)]),
            ],
        };
        let svg = plot.to_svg();
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert!(svg.contains("t &lt;1&gt;"));
        // b keeps only its one positive, finite point on log axes.
        assert_eq!(svg.matches("<circle").count(), 4);
    }

    #[test]
    fn bar_chart_has_one_bar_per_value() {
        let chart = BarChart {
            title: "times".into(),
            y_label: "us".into(),
            bars: vec![("layer".into(), 3.0), ("rms".into(), 2.0)],
        };
        assert_eq!(chart.to_svg().matches("<path").count(), 2);
    }

    #[test]
    fn linear_ticks_are_round_numbers() {
        let axis = Axis::fit(Scale::Linear, [1.3, 3.1].into_iter());
        let labels: Vec<String> = axis.ticks().into_iter().map(|t| t.1).collect();
        assert_eq!(labels, ["1.5", "2", "2.5", "3"]);
    }
}
