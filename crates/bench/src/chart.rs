//! A PNG chart of a comparison: TTFT p90 and output tokens/s per arm across request rates.

use std::path::Path;

use anyhow::{Context, bail};
use plotters::prelude::*;
use plotters::style::{FontStyle, register_font};

use crate::report::ArmReport;

/// One arm's points: (rate, report) in rate order.
pub type Series = Vec<(String, Vec<(f64, ArmReport)>)>;

const FONT_PATHS: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
];

fn load_font() -> anyhow::Result<()> {
    let path = FONT_PATHS
        .iter()
        .find(|p| Path::new(p).exists())
        .context("no DejaVu Sans font found for the chart (Debian: fonts-dejavu-core)")?;
    let bytes: &'static [u8] = Box::leak(std::fs::read(path)?.into_boxed_slice());
    if register_font("sans-serif", FontStyle::Normal, bytes).is_err() {
        bail!("{path} is not a usable font");
    }
    Ok(())
}

/// Draws `series` into a 1400 x 560 PNG at `path`.
pub fn draw(path: &Path, workload: &str, series: &Series) -> anyhow::Result<()> {
    load_font()?;
    let root = BitMapBackend::new(path, (1400, 560)).into_drawing_area();
    root.fill(&WHITE)?;
    let (left, right) = root.split_horizontally(700);
    let rates: Vec<f64> = series
        .iter()
        .flat_map(|(_, pts)| pts.iter().map(|(r, _)| *r))
        .collect();
    let (rmin, rmax) = rates
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), r| {
            (a.min(*r), b.max(*r))
        });
    let pad = ((rmax - rmin) * 0.1).max(0.5);
    let x_range = (rmin - pad)..(rmax + pad);
    let ttft_max = series
        .iter()
        .flat_map(|(_, p)| p.iter().map(|(_, r)| r.ttft_ms[1]))
        .filter(|v| v.is_finite())
        .fold(10.0, f64::max);
    let tput_max = series
        .iter()
        .flat_map(|(_, p)| p.iter().map(|(_, r)| r.output_tokens_per_s))
        .fold(10.0, f64::max);

    let mut ttft = ChartBuilder::on(&left)
        .caption(
            format!("{workload}: TTFT p90 (ms, log)"),
            ("sans-serif", 22),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(x_range.clone(), (1.0..ttft_max * 2.0).log_scale())?;
    ttft.configure_mesh().x_desc("requests/s").draw()?;
    let mut tput = ChartBuilder::on(&right)
        .caption(format!("{workload}: output tokens/s"), ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(x_range, 0.0..tput_max * 1.2)?;
    tput.configure_mesh().x_desc("requests/s").draw()?;

    for (i, (name, points)) in series.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        let ttft_pts: Vec<(f64, f64)> = points
            .iter()
            .map(|(r, a)| (*r, a.ttft_ms[1].max(1.0)))
            .collect();
        let tput_pts: Vec<(f64, f64)> = points
            .iter()
            .map(|(r, a)| (*r, a.output_tokens_per_s))
            .collect();
        ttft.draw_series(LineSeries::new(ttft_pts.clone(), color.stroke_width(2)))?
            .label(name.as_str())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(3))
            });
        ttft.draw_series(ttft_pts.iter().map(|p| Circle::new(*p, 5, color.filled())))?;
        tput.draw_series(LineSeries::new(tput_pts.clone(), color.stroke_width(2)))?;
        tput.draw_series(tput_pts.iter().map(|p| Circle::new(*p, 5, color.filled())))?;
    }
    ttft.configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 14))
        .draw()?;
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_a_png() {
        let report = |ttft: f64, tput: f64| ArmReport {
            ttft_ms: [ttft / 2.0, ttft, ttft * 2.0],
            output_tokens_per_s: tput,
            ..Default::default()
        };
        let series: Series = vec![
            (
                "envoy-least-request".into(),
                vec![(2.0, report(300.0, 400.0)), (4.0, report(20_000.0, 700.0))],
            ),
            (
                "switchyard".into(),
                vec![(2.0, report(100.0, 410.0)), (4.0, report(150.0, 800.0))],
            ),
        ];
        let dir = switchyard_testkit::scratch_dir("chart").unwrap();
        let path = dir.join("chart.png");
        draw(&path, "seed", &series).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(&bytes[1..4], b"PNG");
        assert!(bytes.len() > 10_000);
    }
}
