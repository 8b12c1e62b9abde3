//! The vision degradation study's HTML report (`resnorm vision study`): one self-contained
//! page (inline CSS and SVG, no scripts, no network) with the run settings, the residual
//! panel's table, training-error curves and layer responses (He et al., Figures 6 and 7), and
//! the feed-forward panel's table, gradient norms at initialization and loss curves per depth.
//! Charts are drawn by [`super::svg`], the style is the `resnorm study` report's.

use std::fmt::Write;

use resnorm::vision::study::CurvePoint;
use resnorm::vision::StudyResults;

use super::svg::{escape, LinePlot, Scale, Series};
use super::{figure, page_start};

/// The page for `results`, naming the `command` that produced them.
pub fn render(results: &StudyResults, command: &str) -> String {
    let mut html = page_start("resnorm vision study");
    let c = &results.config;
    let all = |limit: Option<usize>| limit.map_or("all".to_string(), |n| n.to_string());
    let augmentation = match (c.resnet_crop_padding, c.resnet_flip) {
        (0, false) => "no augmentation".to_string(),
        (0, true) => "random flips".to_string(),
        (p, flip) => format!(
            "random crops padded by {p}{}",
            if flip { " and flips" } else { "" }
        ),
    };
    let _ = write!(
        html,
        "<h1>Degradation study</h1><p>Command: <code>{}</code></p><p>Residual panel: {} epoch(s) on \
         {} training images ({}), batch {}, SGD lr {} (momentum 0.9, weight decay 5e-4, cosine), \
         seed {}. Feed-forward panel: width {}, {} epoch(s) on {} images, lr {}. Test images: {}.</p>",
        escape(command),
        c.resnet_epochs,
        all(c.resnet_train_limit),
        augmentation,
        c.batch_size,
        c.lr,
        c.seed,
        c.mlp_width,
        c.mlp_epochs,
        all(c.mlp_train_limit),
        c.mlp_lr,
        all(c.test_limit)
    );
    residual_panel(&mut html, results);
    feed_forward_panel(&mut html, results);
    html.push_str("</body></html>\n");
    html
}

/// A line plot with a linear x axis, drawn into a `<figure>`.
fn chart(html: &mut String, title: &str, axes: (&str, &str), y_scale: Scale, series: Vec<Series>) {
    let plot = LinePlot {
        title: title.to_string(),
        x_label: axes.0.to_string(),
        y_label: axes.1.to_string(),
        x_scale: Scale::Linear,
        y_scale,
        series,
    };
    figure(html, plot.to_svg());
}

fn curve(points: &[CurvePoint]) -> Vec<(f64, f64)> {
    points
        .iter()
        .map(|p| (p.step as f64, p.value as f64))
        .collect()
}

/// `values` as points `(first_x + i, value)`.
fn indexed(values: impl Iterator<Item = f64>, first_x: f64) -> Vec<(f64, f64)> {
    values
        .enumerate()
        .map(|(i, v)| (first_x + i as f64, v))
        .collect()
}

fn residual_panel(html: &mut String, results: &StudyResults) {
    html.push_str(
        "<h2>Plain vs residual networks</h2><table><tr><th>model</th><th>parameters</th>\
         <th>final training error</th><th>test error</th><th>images/s</th></tr>",
    );
    for r in &results.resnets {
        let _ = write!(
            html,
            "<tr><td>{}</td><td>{}</td><td>{:.4}</td><td>{:.4}</td><td>{:.0}</td></tr>",
            escape(&r.model),
            r.parameters,
            r.final_train_error,
            r.test_error,
            r.images_per_second
        );
    }
    html.push_str("</table>");
    let errors = results
        .resnets
        .iter()
        .map(|r| Series::new(r.model.clone(), curve(&r.train_error_curve)))
        .collect();
    chart(
        html,
        "Training error (train-mode batches)",
        ("step", "error"),
        Scale::Linear,
        errors,
    );
    html.push_str(
        "<p>Layer responses (He et al., Figure 7): std of each residual-branch BatchNorm \
         output, before the add and ReLU, on test images in evaluation mode.</p>",
    );
    let stds = |sorted: bool| -> Vec<Series> {
        results
            .resnets
            .iter()
            .map(|r| {
                let mut values: Vec<f64> = r.response_std.iter().map(|(_, s)| *s as f64).collect();
                if sorted {
                    values.sort_by(|a, b| b.total_cmp(a));
                }
                Series::new(r.model.clone(), indexed(values.into_iter(), 1.0))
            })
            .collect()
    };
    chart(
        html,
        "Response std per layer",
        ("layer index", "std"),
        Scale::Linear,
        stds(false),
    );
    chart(
        html,
        "Response std, sorted by magnitude",
        ("rank", "std"),
        Scale::Linear,
        stds(true),
    );
}

fn feed_forward_panel(html: &mut String, results: &StudyResults) {
    html.push_str(
        "<h2>Feed-forward networks</h2><table><tr><th>model</th><th>test error</th>\
         <th>final training loss</th><th class=\"text\">status</th></tr>",
    );
    for m in &results.mlps {
        let _ = write!(
            html,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td class=\"text\">{}</td></tr>",
            escape(&m.model),
            m.test_error.map_or("-".to_string(), |e| format!("{e:.4}")),
            m.loss_curve
                .last()
                .map_or("-".to_string(), |p| format!("{:.4}", p.value)),
            escape(m.failure.as_deref().unwrap_or("ok"))
        );
    }
    html.push_str("</table>");
    for depth in &results.config.mlp_depths {
        let of_depth: Vec<_> = results.mlps.iter().filter(|m| m.depth == *depth).collect();
        let grads = of_depth
            .iter()
            .map(|m| {
                let norms = m.grad_norms_at_init.iter().map(|(_, g)| *g as f64);
                Series::new(m.model.clone(), indexed(norms, 0.0))
            })
            .collect();
        chart(
            html,
            &format!("Depth {depth}: gradient norm per layer at initialization"),
            ("layer (0 = input)", "||dL/dW|| (log)"),
            Scale::Log,
            grads,
        );
        let losses = of_depth
            .iter()
            .map(|m| Series::new(m.model.clone(), curve(&m.loss_curve)))
            .collect();
        chart(
            html,
            &format!("Depth {depth}: training loss"),
            ("step", "loss"),
            Scale::Linear,
            losses,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use resnorm::vision::study::{MlpResult, ResNetResult};
    use resnorm::vision::StudyConfig;

    fn points(values: &[f32]) -> Vec<CurvePoint> {
        values
            .iter()
            .enumerate()
            .map(|(i, &value)| CurvePoint {
                step: 5 * (i as u64 + 1),
                value,
            })
            .collect()
    }

    fn resnet(model: &str, responses: &[f32]) -> ResNetResult {
        ResNetResult {
            model: model.into(),
            parameters: 269434,
            train_error_curve: points(&[0.9, 0.6, 0.4]),
            final_train_error: 0.30431,
            test_error: 0.254,
            test_loss: 0.7,
            images_per_second: 38.4,
            response_std: responses
                .iter()
                .enumerate()
                .map(|(i, &s)| (format!("layer{i}.bn2"), s))
                .collect(),
        }
    }

    fn mlp(depth: usize, residual: bool, failure: Option<&str>) -> MlpResult {
        let skip = if residual { "skip" } else { "plain" };
        MlpResult {
            model: format!("mlp-d{depth}-none-{skip}"),
            depth,
            norm: "none".into(),
            residual,
            // Zero and non-finite norms cannot be drawn on the log axis; the rest are.
            grad_norms_at_init: (0..=depth + 1)
                .map(|i| (format!("w{i}"), [0.5, 1e-3, 0.0, f32::NAN][i % 4]))
                .collect(),
            loss_curve: points(&[2.3, 1.1, f32::INFINITY]),
            test_error: failure.is_none().then_some(0.1234),
            failure: failure.map(str::to_string),
        }
    }

    fn fake() -> StudyResults {
        StudyResults {
            config: StudyConfig {
                resnet_models: vec!["plain20".into(), "resnet20".into()],
                resnet_epochs: 2,
                resnet_train_limit: Some(3000),
                resnet_crop_padding: 0,
                resnet_flip: false,
                test_limit: None,
                mlp_depths: vec![2, 4],
                mlp_width: 16,
                mlp_epochs: 1,
                mlp_train_limit: None,
                mlp_lr: 0.02,
                batch_size: 64,
                lr: 0.1,
                log_every: 5,
                response_images: 8,
                seed: 0,
            },
            resnets: vec![resnet("plain20", &[]), resnet("resnet20", &[0.5, 1.5, 1.0])],
            mlps: vec![
                mlp(2, true, None),
                mlp(2, false, Some("loss diverged <inf>")),
                mlp(4, true, None),
            ],
        }
    }

    /// The `points` attribute of every `<polyline>` in `svg`.
    fn polylines(svg: &str) -> Vec<&str> {
        svg.split("<polyline")
            .skip(1)
            .map(|p| {
                p.split("points=\"")
                    .nth(1)
                    .unwrap()
                    .split('"')
                    .next()
                    .unwrap()
            })
            .collect()
    }

    #[test]
    fn every_chart_draws_a_line_of_two_or_more_points() {
        let html = render(&fake(), "resnorm vision study --out a&b");
        let svgs: Vec<&str> = html
            .split("<svg")
            .skip(1)
            .map(|s| s.split("</svg>").next().unwrap())
            .collect();
        assert_eq!(
            svgs.len(),
            3 + 2 * 2,
            "3 residual-panel charts, 2 per depth"
        );
        for svg in svgs {
            let lines = polylines(svg);
            assert!(
                lines.iter().any(|p| p.split(' ').count() >= 2),
                "{lines:?} in {svg}"
            );
        }
    }

    #[test]
    fn the_page_holds_every_table_and_sentence_and_nothing_external() {
        let html = render(&fake(), "resnorm vision study --out a&b");
        for text in [
            "<title>resnorm vision study</title>",
            "<code>resnorm vision study --out a&amp;b</code>",
            "Residual panel: 2 epoch(s) on 3000 training images (no augmentation), batch 64, SGD lr 0.1",
            "width 16, 1 epoch(s) on all images, lr 0.02. Test images: all.",
            "<td>plain20</td><td>269434</td><td>0.3043</td><td>0.2540</td><td>38</td>",
            "Layer responses (He et al., Figure 7)",
            "<td>mlp-d2-none-plain</td><td>-</td><td>inf</td><td class=\"text\">loss diverged &lt;inf&gt;</td>",
            "<td>mlp-d4-none-skip</td><td>0.1234</td>",
            "Response std, sorted by magnitude",
            "Depth 4: gradient norm per layer at initialization",
            "Depth 4: training loss",
        ] {
            assert!(html.contains(text), "{text} missing");
        }
        let mut augmented = fake();
        (
            augmented.config.resnet_crop_padding,
            augmented.config.resnet_flip,
        ) = (4, true);
        let html_augmented = render(&augmented, "");
        assert!(html_augmented.contains("(random crops padded by 4 and flips)"));
        let without_namespace = html.replace("xmlns=\"http://www.w3.org/2000/svg\"", "");
        for external in ["http", "<script", "src=", "href=", "url("] {
            assert!(
                !without_namespace.contains(external),
                "{external} in the page"
            );
        }
    }

    #[test]
    fn responses_are_sorted_largest_first() {
        let html = render(&fake(), "");
        let sorted = html.split("Response std, sorted").nth(1).unwrap();
        let unsorted = html.split("Response std per layer").nth(1).unwrap();
        let ys = |svg: &str| -> Vec<f64> {
            // The second series (resnet20) is the one with responses.
            polylines(svg)[1]
                .split(' ')
                .map(|p| p.split(',').nth(1).unwrap().parse().unwrap())
                .collect()
        };
        // Pixel y grows downwards: larger values sit higher.
        let (by_layer, by_rank) = (ys(unsorted), ys(sorted));
        assert!(by_rank.windows(2).all(|w| w[0] <= w[1]), "{by_rank:?}");
        assert!(by_layer[1] < by_layer[2] && by_layer[2] < by_layer[0]);
    }

    /// Re-renders the committed study's `results.json` (with the command read from the
    /// committed page) into the system's temporary folder, to compare with
    /// `docs/vision-study/report.html`: `cargo test -p resnorm-cli -- --ignored committed`.
    #[test]
    #[ignore = "writes a file; run by hand when the report changes"]
    fn rerender_the_committed_study() {
        let docs = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/vision-study");
        let json = std::fs::read_to_string(docs.join("results.json")).unwrap();
        let results: StudyResults = serde_json::from_str(&json).unwrap();
        let page = std::fs::read_to_string(docs.join("report.html")).unwrap();
        let command = page
            .split("<code>")
            .nth(1)
            .unwrap()
            .split("</code>")
            .next()
            .unwrap();
        let command = command
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&amp;", "&");
        let out = std::env::temp_dir().join("resnorm-vision-report.html");
        std::fs::write(&out, render(&results, &command)).unwrap();
        println!("wrote {}", out.display());
    }
}
