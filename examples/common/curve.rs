//! The training curve the MNIST examples write: the mean training loss and the test
//! accuracy per epoch, as an SVG (two panels sharing the epoch axis), drawn with
//! `plotters`' SVG backend only (no fonts, no bitmaps: text is left to the viewer).
//! Included by `examples/mnist_softmax.rs` and `examples/mnist_mlp.rs` with `#[path]`.
//!
//! Drawing needs the `plot` feature (`cargo run --release --features plot --example
//! mnist_softmax`): plotters costs the examples' first build about 5 s of compilation,
//! which the plain first run does not pay. Without it, the points are still collected
//! and `write_svg` says how to draw them.

use std::error::Error;
use std::path::{Path, PathBuf};

#[cfg(feature = "plot")]
use plotters::prelude::*;

/// Whether this build draws (the `plot` feature): without it, the examples skip the
/// per-epoch test-set evaluations too.
pub const DRAWS: bool = cfg!(feature = "plot");

/// One epoch's point: the epoch (1-based), its mean training loss and the test accuracy
/// after it.
#[derive(Clone, Copy, Debug)]
#[cfg_attr(not(feature = "plot"), allow(dead_code))]
pub struct Point {
    pub epoch: f32,
    pub loss: f32,
    pub accuracy: f32,
}

/// Where an example writes its curve: `target/plots/<name>.svg` under the project root
/// (next to `data/`, whatever the working directory).
pub fn default_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("target/plots").join(format!("{name}.svg"))
}

/// Without the `plot` feature: draws nothing, and says how to.
#[cfg(not(feature = "plot"))]
pub fn write_svg(path: &Path, _title: &str, _points: &[Point]) -> Result<String, Box<dyn Error>> {
    let name = path.file_stem().and_then(|s| s.to_str()).unwrap_or("mnist_softmax");
    Ok(format!("not drawn (`cargo run --release --features plot --example {name}` draws it)"))
}

/// Writes `points` as an SVG at `path` (its directory is created), titled `title`;
/// returns the line to print.
#[cfg(feature = "plot")]
pub fn write_svg(path: &Path, title: &str, points: &[Point]) -> Result<String, Box<dyn Error>> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let last = points.last().map_or(1.0, |p| p.epoch).max(1.0);
    // Loss on a log axis: an MLP's falls by orders of magnitude.
    let max_loss = points.iter().map(|p| p.loss).fold(0.0f32, f32::max).max(1e-6) * 1.2;
    let min_loss = points.iter().map(|p| p.loss).fold(f32::INFINITY, f32::min).clamp(1e-7, max_loss / 2.0) * 0.8;
    let min_acc = points.iter().map(|p| p.accuracy).fold(1.0f32, f32::min);
    // The accuracy panel starts at a round tenth below the lowest point, so that the
    // last percent is visible.
    let acc_floor = ((min_acc * 10.0).floor() / 10.0).clamp(0.0, 0.9);

    let root = SVGBackend::new(path, (720, 520)).into_drawing_area();
    root.fill(&WHITE)?;
    let root = root.titled(title, ("sans-serif", 20))?;
    let (top, bottom) = root.split_vertically(240);

    // The loss panel on a log axis when the loss falls by more than a decade (an MLP's
    // falls by four), else on a linear one from 0.
    macro_rules! loss_panel {
        ($y:expr, $fmt:expr, $desc:expr) => {{
            let mut loss = ChartBuilder::on(&top)
                .margin(12)
                .x_label_area_size(30)
                .y_label_area_size(56)
                .build_cartesian_2d(0f32..last, $y)?;
            loss.configure_mesh()
                .light_line_style(TRANSPARENT)
                .x_label_formatter(&|x| format!("{x:.0}"))
                .y_label_formatter(&$fmt)
                .x_desc("epoch")
                .y_desc($desc)
                .draw()?;
            loss.draw_series(LineSeries::new(points.iter().map(|p| (p.epoch, p.loss)), RED.stroke_width(2)))?;
        }};
    }
    if max_loss / min_loss > 10.0 {
        loss_panel!((min_loss..max_loss).log_scale(), |y: &f32| format!("{y:.0e}"), "training loss (epoch mean, log)");
    } else {
        loss_panel!(0f32..max_loss, |y: &f32| format!("{y:.1}"), "training loss (epoch mean)");
    }

    let mut acc = ChartBuilder::on(&bottom)
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(56)
        .build_cartesian_2d(0f32..last, acc_floor..1f32)?;
    acc.configure_mesh()
        .light_line_style(TRANSPARENT)
        .x_label_formatter(&|x| format!("{x:.0}"))
        .x_desc("epoch")
        .y_desc("test accuracy")
        .draw()?;
    acc.draw_series(LineSeries::new(points.iter().map(|p| (p.epoch, p.accuracy)), BLUE.stroke_width(2)))?;
    root.present()?;
    Ok(path.display().to_string())
}
