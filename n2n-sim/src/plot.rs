//! PNG and SVG plots of simulation results (plotters), from plain data.
//!
//! Every plot is written twice, `<stem>.png` and `<stem>.svg`. Text (titles,
//! axis labels, legends) needs a TrueType font: [`load_font`] registers the
//! first one found (the file named by `N2N_SIM_FONT`, else DejaVu Sans or
//! Liberation Sans at their Debian paths; `apt-get install fonts-dejavu-core`).
//! Without a font the plots are drawn without text rather than not at all.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::FontStyle;

/// Font files tried, in order, after `N2N_SIM_FONT`.
pub const FONT_PATHS: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
];

const FAMILY: &str = "sans-serif";
const SIZE: (u32, u32) = (800, 500);
const COLORS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(255, 127, 14),
    RGBColor(148, 103, 189),
    RGBColor(127, 127, 127),
];

/// Why a plot could not be written.
#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    /// The drawing backend failed (I/O, encoding).
    #[error("cannot draw {path}: {message}")]
    Draw {
        /// The file being written.
        path: PathBuf,
        /// What failed.
        message: String,
    },
}

/// Registers a TrueType font for the plots' text, once per process. Returns
/// the font file used, or `None` (plots then carry no text).
pub fn load_font() -> Option<&'static Path> {
    static FONT: OnceLock<Option<PathBuf>> = OnceLock::new();
    FONT.get_or_init(|| {
        let from_env = std::env::var_os("N2N_SIM_FONT").map(PathBuf::from);
        let candidates = from_env
            .into_iter()
            .chain(FONT_PATHS.iter().map(PathBuf::from));
        for path in candidates {
            let Ok(bytes) = std::fs::read(&path) else {
                continue;
            };
            // The font registry keeps `'static` bytes: one font, leaked once.
            let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
            if plotters::style::register_font(FAMILY, FontStyle::Normal, bytes).is_ok() {
                tracing::debug!(font = %path.display(), "plot font loaded");
                return Some(path);
            }
        }
        tracing::warn!("no TrueType font found (set N2N_SIM_FONT): plots without text");
        None
    })
    .as_deref()
}

/// A named line of `(x, y)` points.
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    /// Legend entry.
    pub name: String,
    /// Points, in x order.
    pub points: Vec<(f64, f64)>,
    /// Draw as a dashed reference line.
    pub dashed: bool,
}

impl Series {
    /// A solid line.
    pub fn new(name: impl Into<String>, points: Vec<(f64, f64)>) -> Self {
        Self {
            name: name.into(),
            points,
            dashed: false,
        }
    }

    /// A dashed reference line.
    pub fn reference(name: impl Into<String>, points: Vec<(f64, f64)>) -> Self {
        Self {
            dashed: true,
            ..Self::new(name, points)
        }
    }
}

/// Axis titles and the plot title.
#[derive(Clone, Copy, Debug)]
pub struct Labels<'a> {
    /// Plot title.
    pub title: &'a str,
    /// X axis.
    pub x: &'a str,
    /// Y axis.
    pub y: &'a str,
}

fn bounds(series: &[Series]) -> ((f64, f64), (f64, f64)) {
    let pts = series.iter().flat_map(|s| s.points.iter());
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in pts {
        if x.is_finite() && y.is_finite() {
            x0 = x0.min(x);
            x1 = x1.max(x);
            y0 = y0.min(y);
            y1 = y1.max(y);
        }
    }
    if x0 > x1 {
        return ((0.0, 1.0), (0.0, 1.0));
    }
    if x1 - x0 < 1e-9 {
        x1 = x0 + 1.0;
    }
    let pad = ((y1 - y0) * 0.05).max(0.5);
    let low = if y0 >= 0.0 {
        (y0 - pad).max(0.0)
    } else {
        y0 - pad
    };
    ((x0, x1), (low, y1 + pad))
}

/// Draws lines to `<stem>.png` and `<stem>.svg`.
///
/// # Errors
/// [`PlotError::Draw`] if a file cannot be written.
pub fn lines(stem: &Path, labels: Labels<'_>, series: &[Series]) -> Result<(), PlotError> {
    let text = load_font().is_some();
    let (png, svg) = paths(stem);
    draw_lines(
        BitMapBackend::new(&png, SIZE).into_drawing_area(),
        labels,
        series,
        text,
    )
    .map_err(|e| failed(&png, e))?;
    draw_lines(
        SVGBackend::new(&svg, SIZE).into_drawing_area(),
        labels,
        series,
        text,
    )
    .map_err(|e| failed(&svg, e))
}

/// Draws a histogram of `(value, count)` bars to `<stem>.png` and `<stem>.svg`,
/// with an optional vertical marker (e.g. ln N) named in the legend.
///
/// # Errors
/// [`PlotError::Draw`] if a file cannot be written.
pub fn histogram(
    stem: &Path,
    labels: Labels<'_>,
    bars: &[(u32, u64)],
    marker: Option<(&str, f64)>,
) -> Result<(), PlotError> {
    let text = load_font().is_some();
    let (png, svg) = paths(stem);
    draw_histogram(
        BitMapBackend::new(&png, SIZE).into_drawing_area(),
        labels,
        bars,
        marker,
        text,
    )
    .map_err(|e| failed(&png, e))?;
    draw_histogram(
        SVGBackend::new(&svg, SIZE).into_drawing_area(),
        labels,
        bars,
        marker,
        text,
    )
    .map_err(|e| failed(&svg, e))
}

type DrawResult = Result<(), Box<dyn std::error::Error>>;

fn paths(stem: &Path) -> (PathBuf, PathBuf) {
    let mut png = stem.as_os_str().to_owned();
    png.push(".png");
    let mut svg = stem.as_os_str().to_owned();
    svg.push(".svg");
    (png.into(), svg.into())
}

fn failed(path: &Path, e: Box<dyn std::error::Error>) -> PlotError {
    PlotError::Draw {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

fn chart_frame<'a, DB: DrawingBackend>(
    root: &'a DrawingArea<DB, Shift>,
    labels: Labels<'_>,
    x: (f64, f64),
    y: (f64, f64),
    text: bool,
) -> Result<
    ChartContext<
        'a,
        DB,
        Cartesian2d<plotters::coord::types::RangedCoordf64, plotters::coord::types::RangedCoordf64>,
    >,
    Box<dyn std::error::Error>,
>
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE)?;
    let mut builder = ChartBuilder::on(root);
    builder.margin(12);
    if text {
        builder
            .caption(labels.title, (FAMILY, 22))
            .x_label_area_size(40)
            .y_label_area_size(55);
    }
    let mut chart = builder.build_cartesian_2d(x.0..x.1, y.0..y.1)?;
    let mut mesh = chart.configure_mesh();
    if text {
        mesh.x_desc(labels.x)
            .y_desc(labels.y)
            .label_style((FAMILY, 14));
    } else {
        mesh.x_labels(0).y_labels(0);
    }
    mesh.light_line_style(RGBColor(235, 235, 235)).draw()?;
    Ok(chart)
}

fn draw_lines<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    labels: Labels<'_>,
    series: &[Series],
    text: bool,
) -> DrawResult
where
    DB::ErrorType: 'static,
{
    let (x, y) = bounds(series);
    let mut chart = chart_frame(&root, labels, x, y, text)?;
    for (i, s) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let style = color.stroke_width(2);
        let drawn = if s.dashed {
            chart.draw_series(DashedLineSeries::new(s.points.iter().copied(), 6, 4, style))?
        } else {
            chart.draw_series(LineSeries::new(s.points.iter().copied(), style))?
        };
        if text {
            drawn.label(s.name.as_str()).legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
        }
    }
    if text && !series.is_empty() {
        chart
            .configure_series_labels()
            .label_font((FAMILY, 14))
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()?;
    }
    root.present()?;
    Ok(())
}

fn draw_histogram<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    labels: Labels<'_>,
    bars: &[(u32, u64)],
    marker: Option<(&str, f64)>,
    text: bool,
) -> DrawResult
where
    DB::ErrorType: 'static,
{
    let lo = bars.iter().map(|b| b.0).min().unwrap_or(0) as f64;
    let hi = bars.iter().map(|b| b.0).max().unwrap_or(1) as f64;
    let (lo, hi) = match marker {
        Some((_, m)) if m.is_finite() => (lo.min(m.floor()), hi.max(m.ceil())),
        _ => (lo, hi),
    };
    let top = bars.iter().map(|b| b.1).max().unwrap_or(1).max(1) as f64;
    let mut chart = chart_frame(&root, labels, (lo - 1.0, hi + 1.0), (0.0, top * 1.08), text)?;
    let bar_color = COLORS[0];
    let drawn = chart.draw_series(bars.iter().map(|&(v, n)| {
        let v = f64::from(v);
        Rectangle::new([(v - 0.4, 0.0), (v + 0.4, n as f64)], bar_color.filled())
    }))?;
    if text {
        drawn.label("peers").legend(move |(x, y)| {
            Rectangle::new([(x, y - 5), (x + 12, y + 5)], bar_color.filled())
        });
    }
    if let Some((name, m)) = marker.filter(|(_, m)| m.is_finite()) {
        let color = COLORS[1];
        let drawn = chart.draw_series(DashedLineSeries::new(
            [(m, 0.0), (m, top * 1.05)],
            6,
            4,
            color.stroke_width(2),
        ))?;
        if text {
            drawn.label(name).legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
        }
    }
    if text {
        chart
            .configure_series_labels()
            .label_font((FAMILY, 14))
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()?;
    }
    root.present()?;
    Ok(())
}
