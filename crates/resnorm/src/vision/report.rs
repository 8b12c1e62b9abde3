//! The study's report: one self-contained HTML page with inline SVG charts drawn here (no
//! plotting library, no scripts, no external files).
//!
//! ```
//! use resnorm::vision::report::{line_chart, Series};
//! let svg = line_chart("loss", "step", "loss", &[Series {
//!     label: "a".into(), points: vec![(0.0, 2.0), (10.0, 1.0)] }], false);
//! assert!(svg.starts_with("<svg") && svg.contains("polyline"));
//! ```

use std::fmt::Write;

use super::study::StudyResults;

/// A named curve of `(x, y)` points.
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    /// Legend entry.
    pub label: String,
    /// Points in x order.
    pub points: Vec<(f64, f64)>,
}

const WIDTH: f64 = 640.0;
const HEIGHT: f64 = 360.0;
const MARGIN_LEFT: f64 = 64.0;
const MARGIN_RIGHT: f64 = 170.0;
const MARGIN_TOP: f64 = 30.0;
const MARGIN_BOTTOM: f64 = 44.0;
const COLORS: [&str; 8] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf",
];

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// An SVG line chart of `series` (y on a log10 scale when `log_y`; non-positive or
/// non-finite values are then left out).
pub fn line_chart(
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Series],
    log_y: bool,
) -> String {
    let transform = |y: f64| if log_y { y.log10() } else { y };
    let usable = |&(x, y): &(f64, f64)| x.is_finite() && y.is_finite() && (!log_y || y > 0.0);
    let points: Vec<(f64, f64)> = series
        .iter()
        .flat_map(|s| s.points.iter().copied().filter(usable))
        .map(|(x, y)| (x, transform(y)))
        .collect();
    let (mut x0, mut x1, mut y0, mut y1) = points.iter().fold(
        (
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::INFINITY,
            f64::NEG_INFINITY,
        ),
        |(a, b, c, d), &(x, y)| (a.min(x), b.max(x), c.min(y), d.max(y)),
    );
    if points.is_empty() {
        (x0, x1, y0, y1) = (0.0, 1.0, 0.0, 1.0);
    }
    if x1 - x0 < 1e-12 {
        x1 = x0 + 1.0;
    }
    if y1 - y0 < 1e-12 {
        y1 = y0 + 1.0;
    }
    if !log_y && y0 > 0.0 && y0 < 0.5 * y1 {
        y0 = 0.0;
    }
    let plot_w = WIDTH - MARGIN_LEFT - MARGIN_RIGHT;
    let plot_h = HEIGHT - MARGIN_TOP - MARGIN_BOTTOM;
    let sx = |x: f64| MARGIN_LEFT + (x - x0) / (x1 - x0) * plot_w;
    let sy = |y: f64| MARGIN_TOP + (1.0 - (y - y0) / (y1 - y0)) * plot_h;
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" font-family="sans-serif" font-size="11">"#
    );
    let _ = write!(
        svg,
        r#"<text x="{}" y="18" font-size="13" font-weight="bold">{}</text>"#,
        MARGIN_LEFT,
        escape(title)
    );
    let _ = write!(
        svg,
        r##"<rect x="{MARGIN_LEFT}" y="{MARGIN_TOP}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#888"/>"##
    );
    for i in 0..=4 {
        let fx = i as f64 / 4.0;
        let (x, y) = (x0 + fx * (x1 - x0), y0 + fx * (y1 - y0));
        let y_text = if log_y {
            format!("{:.2e}", 10f64.powf(y))
        } else {
            format!("{y:.3}")
        };
        let _ = write!(
            svg,
            r##"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text><text x="{:.1}" y="{:.1}" text-anchor="end">{y_text}</text><line x1="{MARGIN_LEFT}" x2="{:.1}" y1="{:.1}" y2="{:.1}" stroke="#eee"/>"##,
            sx(x),
            HEIGHT - MARGIN_BOTTOM + 14.0,
            format_tick(x),
            MARGIN_LEFT - 4.0,
            sy(y) + 4.0,
            MARGIN_LEFT + plot_w,
            sy(y),
            sy(y)
        );
    }
    let _ = write!(
        svg,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text><text x="12" y="{:.1}" transform="rotate(-90 12 {:.1})" text-anchor="middle">{}{}</text>"#,
        MARGIN_LEFT + plot_w / 2.0,
        HEIGHT - 8.0,
        escape(x_label),
        MARGIN_TOP + plot_h / 2.0,
        MARGIN_TOP + plot_h / 2.0,
        escape(y_label),
        if log_y { " (log)" } else { "" }
    );
    for (i, s) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let coords: Vec<String> = s
            .points
            .iter()
            .copied()
            .filter(usable)
            .map(|(x, y)| format!("{:.1},{:.1}", sx(x), sy(transform(y))))
            .collect();
        let _ = write!(
            svg,
            r#"<polyline fill="none" stroke="{color}" stroke-width="1.5" points="{}"/>"#,
            coords.join(" ")
        );
        let ly = MARGIN_TOP + 14.0 * i as f64 + 8.0;
        let lx = WIDTH - MARGIN_RIGHT + 10.0;
        let _ = write!(
            svg,
            r#"<line x1="{lx}" x2="{}" y1="{ly}" y2="{ly}" stroke="{color}" stroke-width="2"/><text x="{}" y="{}">{}</text>"#,
            lx + 16.0,
            lx + 20.0,
            ly + 4.0,
            escape(&s.label)
        );
    }
    svg.push_str("</svg>");
    svg
}

fn format_tick(x: f64) -> String {
    if x.abs() >= 100.0 || x.fract() == 0.0 {
        format!("{x:.0}")
    } else {
        format!("{x:.2}")
    }
}

/// The study's HTML page.
pub fn study_html(results: &StudyResults, command: &str) -> String {
    let mut html = String::from(
        "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>resnorm vision study</title>\
         <style>body{font-family:sans-serif;max-width:980px;margin:2em auto}table{border-collapse:\
         collapse}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}</style></head><body>",
    );
    let c = &results.config;
    let _ = write!(
        html,
        "<h1>Degradation study</h1><p>Command: <code>{}</code></p><p>Residual panel: {} epoch(s) on \
         {} training images, batch {}, SGD lr {} (momentum 0.9, weight decay 5e-4, cosine), seed {}. \
         Feed-forward panel: width {}, {} epoch(s) on {} images, lr {}. Test images: {}.</p>",
        escape(command),
        c.resnet_epochs,
        c.resnet_train_limit.map_or("all".to_string(), |n| n.to_string()),
        c.batch_size,
        c.lr,
        c.seed,
        c.mlp_width,
        c.mlp_epochs,
        c.mlp_train_limit.map_or("all".to_string(), |n| n.to_string()),
        c.mlp_lr,
        c.test_limit.map_or("all".to_string(), |n| n.to_string())
    );
    html.push_str(
        "<h2>Plain vs residual networks</h2><table><tr><th>model</th><th>parameters</th>\
                   <th>final training error</th><th>test error</th><th>images/s</th></tr>",
    );
    for r in &results.resnets {
        let _ = write!(
            html,
            "<tr><td>{}</td><td>{}</td><td>{:.4}</td><td>{:.4}</td><td>{:.0}</td></tr>",
            r.model, r.parameters, r.final_train_error, r.test_error, r.images_per_second
        );
    }
    html.push_str("</table>");
    let curves: Vec<Series> = results
        .resnets
        .iter()
        .map(|r| Series {
            label: r.model.clone(),
            points: r
                .train_error_curve
                .iter()
                .map(|p| (p.step as f64, p.value as f64))
                .collect(),
        })
        .collect();
    html.push_str(&line_chart(
        "Training error (train-mode batches)",
        "step",
        "error",
        &curves,
        false,
    ));
    let responses: Vec<Series> = results
        .resnets
        .iter()
        .map(|r| Series {
            label: r.model.clone(),
            points: r
                .response_std
                .iter()
                .enumerate()
                .map(|(i, (_, s))| (i as f64 + 1.0, *s as f64))
                .collect(),
        })
        .collect();
    html.push_str(
        "<p>Layer responses (He et al., Figure 7): std of each residual-branch BatchNorm \
                   output, before the add and ReLU, on test images in evaluation mode.</p>",
    );
    html.push_str(&line_chart(
        "Response std per layer",
        "layer index",
        "std",
        &responses,
        false,
    ));
    let mut sorted = responses.clone();
    for s in &mut sorted {
        let mut values: Vec<f64> = s.points.iter().map(|p| p.1).collect();
        values.sort_by(|a, b| b.total_cmp(a));
        s.points = values
            .into_iter()
            .enumerate()
            .map(|(i, v)| (i as f64 + 1.0, v))
            .collect();
    }
    html.push_str(&line_chart(
        "Response std, sorted by magnitude",
        "rank",
        "std",
        &sorted,
        false,
    ));

    html.push_str(
        "<h2>Feed-forward networks</h2><table><tr><th>model</th><th>test error</th>\
                   <th>final training loss</th><th>status</th></tr>",
    );
    for m in &results.mlps {
        let _ = write!(
            html,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            m.model,
            m.test_error.map_or("-".to_string(), |e| format!("{e:.4}")),
            m.loss_curve
                .last()
                .map_or("-".to_string(), |p| format!("{:.4}", p.value)),
            escape(m.failure.as_deref().unwrap_or("ok"))
        );
    }
    html.push_str("</table>");
    for depth in &c.mlp_depths {
        let of_depth: Vec<_> = results.mlps.iter().filter(|m| m.depth == *depth).collect();
        let grads: Vec<Series> = of_depth
            .iter()
            .map(|m| Series {
                label: m.model.clone(),
                points: m
                    .grad_norms_at_init
                    .iter()
                    .enumerate()
                    .map(|(i, (_, g))| (i as f64, *g as f64))
                    .collect(),
            })
            .collect();
        html.push_str(&line_chart(
            &format!("Depth {depth}: gradient norm per layer at initialization"),
            "layer (0 = input)",
            "||dL/dW||",
            &grads,
            true,
        ));
        let losses: Vec<Series> = of_depth
            .iter()
            .map(|m| Series {
                label: m.model.clone(),
                points: m
                    .loss_curve
                    .iter()
                    .map(|p| (p.step as f64, p.value as f64))
                    .collect(),
            })
            .collect();
        html.push_str(&line_chart(
            &format!("Depth {depth}: training loss"),
            "step",
            "loss",
            &losses,
            false,
        ));
    }
    html.push_str("</body></html>\n");
    html
}
