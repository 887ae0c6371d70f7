//! The report's plots, each as PNG and SVG (plotters, no system libraries): reward, help rate and
//! accuracies over steps, and accuracy against call rate. Several runs draw one line each.
//!
//! PNG text is rasterised by ab_glyph from a DejaVu Sans subset compiled into the binary
//! (`assets/`), so no system font is looked up.

use std::path::{Path, PathBuf};

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::{FontStyle, register_font};

use tandem_pipeline::report::{Breakdown, ReportError, RunReport, Tally};

const SIZE: (u32, u32) = (800, 480);
const FONT: &[u8] = include_bytes!("../../assets/DejaVuSans-subset.ttf");

/// One plot: lines (or points) of (x, y).
struct Chart {
    file: &'static str,
    title: &'static str,
    x_desc: &'static str,
    y_desc: &'static str,
    /// Rates are drawn on 0..1; other values on their own range.
    unit_y: bool,
    /// Points, not lines: per-step (call rate, accuracy) pairs do not form a path.
    points: bool,
    series: Vec<(String, Vec<(f64, f64)>)>,
}

/// Writes every plot of `runs` into `dir` as `<name>.png` and `<name>.svg`; returns the files.
pub fn write_plots(runs: &[RunReport], dir: &Path) -> Result<Vec<PathBuf>, ReportError> {
    let several = runs.len() > 1;
    let name = |run: &RunReport, metric: &str| {
        if several {
            format!("{} {metric}", run.run_id)
        } else {
            metric.to_owned()
        }
    };
    let over_steps = |metric: fn(&Tally) -> f64| {
        move |run: &RunReport| -> Vec<(f64, f64)> {
            run.steps_of(&Breakdown::All)
                .iter()
                .map(|(step, t)| (*step as f64, metric(t)))
                .collect()
        }
    };
    let mut charts = vec![
        Chart {
            file: "reward",
            title: "Mean reward per step",
            x_desc: "step",
            y_desc: "mean reward",
            unit_y: false,
            points: false,
            series: runs
                .iter()
                .map(|r| (name(r, "reward"), over_steps(Tally::mean_reward)(r)))
                .collect(),
        },
        Chart {
            file: "help_rate",
            title: "Help rate per step",
            x_desc: "step",
            y_desc: "share of samples that asked",
            unit_y: true,
            points: false,
            series: runs
                .iter()
                .map(|r| (name(r, "help rate"), over_steps(Tally::help_rate)(r)))
                .collect(),
        },
    ];
    let mut accuracy = Vec::new();
    for run in runs {
        accuracy.push((
            name(run, "overall"),
            over_steps(Tally::overall_accuracy)(run),
        ));
        accuracy.push((
            name(run, "conditional"),
            over_steps(Tally::conditional_accuracy)(run),
        ));
        accuracy.push((name(run, "local"), over_steps(Tally::local_accuracy)(run)));
    }
    charts.push(Chart {
        file: "accuracy",
        title: "Accuracy per step",
        x_desc: "step",
        y_desc: "accuracy",
        unit_y: true,
        points: false,
        series: accuracy,
    });
    charts.push(Chart {
        file: "accuracy_vs_call_rate",
        title: "Overall accuracy vs call rate (one point per step)",
        x_desc: "call rate (help rate)",
        y_desc: "overall accuracy",
        unit_y: true,
        points: true,
        series: runs
            .iter()
            .map(|r| {
                let points = r
                    .steps_of(&Breakdown::All)
                    .iter()
                    .map(|(_, t)| (t.help_rate(), t.overall_accuracy()))
                    .collect();
                (r.run_id.clone(), points)
            })
            .collect(),
    });

    let mut files = Vec::new();
    for chart in &mut charts {
        files.extend(write_chart(chart, dir)?);
    }
    Ok(files)
}

/// Writes lines of rates against rates (both on 0..1) as `<file>.png` and `<file>.svg` in
/// `dir`: `tandem eval`'s accuracy against call rate, one line per routing method.
pub fn write_rate_lines(
    dir: &Path,
    file: &'static str,
    title: &'static str,
    (x_desc, y_desc): (&'static str, &'static str),
    series: Vec<(String, Vec<(f64, f64)>)>,
) -> Result<Vec<PathBuf>, ReportError> {
    write_chart(
        &mut Chart {
            file,
            title,
            x_desc,
            y_desc,
            unit_y: true,
            points: false,
            series,
        },
        dir,
    )
}

/// Draws one chart as PNG and SVG into `dir`.
fn write_chart(chart: &mut Chart, dir: &Path) -> Result<Vec<PathBuf>, ReportError> {
    static REGISTERED: std::sync::Once = std::sync::Once::new();
    REGISTERED.call_once(|| {
        // The font is compiled in and known to parse; a failure would only lose PNG text.
        let _ = register_font("sans-serif", FontStyle::Normal, FONT);
    });
    std::fs::create_dir_all(dir).map_err(|e| ReportError::Write {
        path: dir.to_owned(),
        message: e.to_string(),
    })?;
    for (_, points) in &mut chart.series {
        points.retain(|(x, y)| x.is_finite() && y.is_finite());
    }
    let svg = dir.join(format!("{}.svg", chart.file));
    let png = dir.join(format!("{}.png", chart.file));
    let fail = |path: &Path, e: String| ReportError::Write {
        path: path.to_owned(),
        message: e,
    };
    draw(SVGBackend::new(&svg, SIZE).into_drawing_area(), chart).map_err(|e| fail(&svg, e))?;
    draw(BitMapBackend::new(&png, SIZE).into_drawing_area(), chart).map_err(|e| fail(&png, e))?;
    Ok(vec![png, svg])
}

fn draw<DB: DrawingBackend>(root: DrawingArea<DB, Shift>, chart: &Chart) -> Result<(), String> {
    let e = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
    root.fill(&WHITE).map_err(e)?;
    let all = chart.series.iter().flat_map(|(_, p)| p.iter());
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in all {
        (x0, x1, y0, y1) = (x0.min(x), x1.max(x), y0.min(y), y1.max(y));
    }
    if x0 > x1 {
        (x0, x1, y0, y1) = (0.0, 1.0, 0.0, 1.0);
    }
    if chart.unit_y {
        (y0, y1) = (0.0, 1.0);
    }
    if chart.points {
        (x0, x1) = (0.0, 1.0);
    }
    if x1 - x0 < 1e-9 {
        x1 = x0 + 1.0;
    }
    if y1 - y0 < 1e-9 {
        (y0, y1) = (y0 - 0.5, y1 + 0.5);
    }
    let pad = if chart.unit_y { 0.0 } else { (y1 - y0) * 0.05 };
    let mut ctx = ChartBuilder::on(&root)
        .caption(chart.title, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(56)
        .build_cartesian_2d(x0..x1, (y0 - pad)..(y1 + pad))
        .map_err(e)?;
    let steps_axis = !chart.points;
    let x_label = move |x: &f64| {
        if steps_axis {
            format!("{x:.0}")
        } else {
            format!("{x:.1}")
        }
    };
    ctx.configure_mesh()
        .x_label_formatter(&x_label)
        .x_desc(chart.x_desc)
        .y_desc(chart.y_desc)
        .label_style(("sans-serif", 14))
        .draw()
        .map_err(e)?;
    for (i, (label, points)) in chart.series.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        if chart.points {
            ctx.draw_series(points.iter().map(|&p| Circle::new(p, 4, color.filled())))
                .map_err(e)?
                .label(label.as_str())
                .legend(move |(x, y)| Circle::new((x + 10, y), 4, color.filled()));
        } else {
            ctx.draw_series(LineSeries::new(
                points.iter().copied(),
                color.stroke_width(2),
            ))
            .map_err(e)?
            .label(label.as_str())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
        }
    }
    ctx.configure_series_labels()
        .label_font(("sans-serif", 14))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .position(SeriesLabelPosition::LowerRight)
        .draw()
        .map_err(e)?;
    root.present().map_err(e)
}
