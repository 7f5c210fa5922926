//! `gpu-mlp plot RUN.jsonl... -o FILE`: draws saved runs (`--metrics-out` files, or `--json`
//! output saved to a file), several on one chart with a legend, to compare settings.

use crate::error::Result;
use crate::metrics_file;
use crate::plot::{self, Curves};
use clap::Args;
use std::io::Write;
use std::path::PathBuf;

#[derive(Args, Debug, Clone)]
pub struct PlotArgs {
    /// Saved runs: files written by --metrics-out (JSON lines, or .csv) or by --json.
    #[arg(required = true, value_name = "RUN")]
    pub runs: Vec<PathBuf>,
    /// The picture to write (.png or .svg).
    #[arg(long, short, value_name = "FILE")]
    pub output: PathBuf,
    /// The chart's title [default: the run's settings, or how many runs]
    #[arg(long)]
    pub title: Option<String>,
    /// Legend names for the runs, in order, comma-separated [default: the file names, less
    /// their extension]
    #[arg(long, value_delimiter = ',')]
    pub labels: Vec<String>,
}

/// `gpu-mlp plot`: reads each run and draws them all.
pub fn plot_command(args: &PlotArgs) -> Result<()> {
    plot::check_path(&args.output)?;
    let mut runs = Vec::with_capacity(args.runs.len());
    for (index, path) in args.runs.iter().enumerate() {
        let label = match args.labels.get(index) {
            Some(label) => label.clone(),
            None => path
                .file_stem()
                .map_or_else(|| path.display().to_string(), |s| s.to_string_lossy().into_owned()),
        };
        let records = metrics_file::read(path)?;
        runs.push(Curves::from_records(&label, path, records)?);
    }
    let title = args.title.clone().unwrap_or_else(|| plot::default_title(&runs));
    plot::draw(&runs, &title, &args.output)?;
    writeln!(std::io::stdout().lock(), "plot: {}", args.output.display())?;
    Ok(())
}
