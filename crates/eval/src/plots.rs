//! PNG plots with plotters (bitmap backend; text in DejaVu Sans read from the system's fonts,
//! Debian `fonts-dejavu-core`).
use std::path::Path;

use plotters::prelude::*;

use crate::{Group, PAPER_POINTS};

type Res<T> = std::result::Result<T, Box<dyn std::error::Error>>;

const FONTS: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
];

fn font() -> Result<(), String> {
    static ONCE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let ok = *ONCE.get_or_init(|| {
        let Some(bytes) = FONTS.iter().find_map(|p| std::fs::read(p).ok()) else { return false };
        let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
        plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok()
    });
    if ok { Ok(()) } else { Err("no DejaVuSans.ttf found (install Debian fonts-dejavu-core)".to_string()) }
}

/// Draws the plots into `dir`; returns their file names.
pub fn draw(dir: &Path, groups: &[Group]) -> Result<Vec<String>, String> {
    font()?;
    let mut files = Vec::new();
    quality(&dir.join("quality_vs_params.png"), groups).map_err(|e| format!("quality plot: {e}"))?;
    files.push("quality_vs_params.png".to_string());
    if groups.iter().any(|g| g.handoffs > 0) {
        modes(&dir.join("recovery_modes.png"), groups).map_err(|e| format!("modes plot: {e}"))?;
        files.push("recovery_modes.png".to_string());
    }
    latency(&dir.join("latency.png"), groups).map_err(|e| format!("latency plot: {e}"))?;
    files.push("latency.png".to_string());
    Ok(files)
}

/// Axis labels in millions, only at 1, 2 and 5 times a power of ten (a log axis has many ticks).
fn millions(x: &f64) -> String {
    let lead = x / 10f64.powf(x.log10().floor());
    if [1.0, 2.0, 5.0].iter().any(|m| (lead - m).abs() < 1e-6) {
        if *x < 1e6 { format!("{:.1}M", x / 1e6) } else { format!("{:.0}M", x / 1e6) }
    } else {
        String::new()
    }
}

fn label(g: &Group) -> String {
    format!("{} @{}w", crate::short(&g.model), g.words)
}

const COLORS: &[RGBColor] = &[RGBColor(31, 119, 180), RGBColor(255, 127, 14), RGBColor(44, 160, 44), RGBColor(214, 39, 40), RGBColor(148, 103, 189), RGBColor(140, 86, 75)];

fn quality(path: &Path, groups: &[Group]) -> Res<()> {
    let root = BitMapBackend::new(path, (1200, 500)).into_drawing_area();
    root.fill(&WHITE)?;
    let (left, right) = root.split_horizontally(600);
    let pts: Vec<(f64, f64, String)> = groups.iter().filter_map(|g| g.mean_ll.map(|ll| ((g.params as f64).max(1.0), ll, label(g)))).collect();
    let xmin = pts.iter().map(|p| p.0).chain([5e6]).fold(f64::INFINITY, f64::min) / 2.0;
    let xmax = pts.iter().map(|p| p.0).chain([2e8]).fold(0.0, f64::max) * 2.0;
    let ymin = pts.iter().map(|p| p.1).fold(0.0, f64::min) - 0.5;
    let mut c = ChartBuilder::on(&left)
        .caption("Ours: opener mean LL under the scorer", ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(55)
        .build_cartesian_2d((xmin..xmax).log_scale(), ymin..0.0)?;
    c.configure_mesh().x_desc("parameters (log)").y_desc("mean log-likelihood per token (nats)").x_label_formatter(&millions).draw()?;
    for (i, (x, y, l)) in pts.iter().enumerate() {
        let col = COLORS[i % COLORS.len()];
        c.draw_series(std::iter::once(Circle::new((*x, *y), 6, col.filled())))?;
        c.draw_series(std::iter::once(Text::new(l.clone(), (*x * 1.15, *y), ("sans-serif", 13).into_font().color(&col))))?;
    }
    let mut c = ChartBuilder::on(&right)
        .caption("Reference: the paper's GPT-4o judge (theirs)", ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(45)
        .build_cartesian_2d((3e6f64..1e9).log_scale(), 1.0f64..5.0)?;
    c.configure_mesh().x_desc("parameters (log)").y_desc("judge score 1-5 (published)").x_label_formatter(&millions).draw()?;
    for (n, p, s) in PAPER_POINTS {
        c.draw_series(std::iter::once(TriangleMarker::new((*p, *s), 7, BLACK.filled())))?;
        c.draw_series(std::iter::once(Text::new(n.replace(['\u{3bc}', '\u{b5}'], "u"), (*p * 1.15, *s + 0.08), ("sans-serif", 12).into_font())))?;
    }
    root.present()?;
    Ok(())
}

fn modes(path: &Path, groups: &[Group]) -> Res<()> {
    let gs: Vec<&Group> = groups.iter().filter(|g| g.handoffs > 0).collect();
    let keys = crate::report::MODES;
    let root = BitMapBackend::new(path, (900, 450)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut c = ChartBuilder::on(&root)
        .caption("Recovery-mode shares per opener model and length", ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d(0f64..gs.len() as f64, 0f64..1.0)?;
    let names: Vec<String> = gs.iter().map(|g| label(g)).collect();
    c.configure_mesh()
        .disable_x_mesh()
        .x_labels(gs.len().max(1) * 2 + 1)
        .x_label_formatter(&|x| {
            let i = (*x - 0.5).round();
            if (x - 0.5 - i).abs() < 1e-6 && i >= 0.0 { names.get(i as usize).cloned().unwrap_or_default() } else { String::new() }
        })
        .y_desc("share of replies")
        .draw()?;
    for (k, key) in keys.iter().enumerate() {
        let col = COLORS[k % COLORS.len()];
        let w = 0.8 / keys.len() as f64;
        c.draw_series(gs.iter().enumerate().map(|(i, g)| {
            let share = *g.modes.get(*key).unwrap_or(&0) as f64 / g.handoffs as f64;
            let x0 = i as f64 + 0.1 + k as f64 * w;
            Rectangle::new([(x0, 0.0), (x0 + w * 0.9, share)], col.filled())
        }))?
        .label(key.replace('_', " "))
        .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], col.filled()));
    }
    c.configure_series_labels().background_style(WHITE.mix(0.8)).border_style(BLACK).position(SeriesLabelPosition::UpperRight).draw()?;
    root.present()?;
    Ok(())
}

fn latency(path: &Path, groups: &[Group]) -> Res<()> {
    // One bar per group: segments between the p50 milestones.
    // (label, [(from ms, to ms, segment kind)])
    type Bar = (String, Vec<(f64, f64, usize)>);
    let rows: Vec<Bar> = groups
        .iter()
        .map(|g| {
            let mut seg = Vec::new();
            if g.handoffs > 0 {
                let ms = [Some(0.0), g.h_first_word_p50, g.h_opener_done_p50, g.h_first_cont_p50, g.total_p50];
                for i in 0..4 {
                    if let (Some(a), Some(b)) = (ms[i], ms[i + 1]) {
                        seg.push((a, b.max(a), i));
                    }
                }
            } else if let Some(t) = g.ttfw_ms {
                seg.push((0.0, t, 0));
                if let Some(o) = g.opener_ms {
                    seg.push((t, o.max(t), 1));
                }
            }
            (label(g), seg)
        })
        .collect();
    let xmax = rows.iter().flat_map(|r| r.1.iter().map(|s| s.1)).fold(1.0, f64::max) * 1.45;
    let root = BitMapBackend::new(path, (900, 120 + 50 * rows.len() as u32)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut c = ChartBuilder::on(&root)
        .caption("Latency timeline (p50 milestones, ms)", ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(35)
        .y_label_area_size(150)
        .build_cartesian_2d(0f64..xmax, 0f64..rows.len() as f64)?;
    let names: Vec<String> = rows.iter().map(|r| r.0.clone()).collect();
    c.configure_mesh()
        .disable_y_mesh()
        .y_labels(rows.len() * 2 + 1)
        .y_label_formatter(&|y| {
            let i = (*y - 0.5).round();
            if (y - 0.5 - i).abs() < 1e-6 && i >= 0.0 { names.get(i as usize).cloned().unwrap_or_default() } else { String::new() }
        })
        .x_desc("ms since the message")
        .draw()?;
    let seg_names = ["to first word", "opener", "gap / cloud wait", "continuation"];
    for (k, name) in seg_names.iter().enumerate() {
        let col = COLORS[k % COLORS.len()];
        let bars: Vec<Rectangle<(f64, f64)>> = rows
            .iter()
            .enumerate()
            .flat_map(|(i, r)| r.1.iter().filter(|s| s.2 == k).map(move |s| Rectangle::new([(s.0, i as f64 + 0.2), (s.1, i as f64 + 0.8)], col.filled())))
            .collect();
        c.draw_series(bars)?.label(*name).legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], col.filled()));
    }
    c.configure_series_labels().background_style(WHITE.mix(0.8)).border_style(BLACK).position(SeriesLabelPosition::LowerRight).draw()?;
    root.present()?;
    Ok(())
}

