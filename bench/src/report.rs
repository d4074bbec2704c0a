//! What a run reports: rows (metric, median, the baseline from the same
//! run, their ratio, the target, the command that measures it alone) and
//! notes, printed as they come and written as BENCHMARKS.md; and the
//! percentile and unit helpers every section uses.

use super::*;

/// One line of the results table.
pub(crate) struct Row {
    pub(crate) section: &'static str,
    pub(crate) metric: String,
    pub(crate) value: String,
    pub(crate) baseline: String,
    pub(crate) ratio: String,
    pub(crate) target: String,
    /// What measures this row alone (after a release build).
    pub(crate) command: String,
}

pub(crate) struct Report {
    pub(crate) rows: Vec<Row>,
    pub(crate) notes: Vec<String>,
    /// The command of the rows added next: see [`Report::measured_by`].
    pub(crate) command: String,
}

/// The bench binary, as README's build leaves it.
pub(crate) const BENCH: &str = "target/release/wasaga-bench";
/// What the sections that start `wasaga serve` processes are given.
pub(crate) const WITH_SERVER: &str = "--wasaga-bin target/release/wasaga";

impl Report {
    /// The rows added from now on are measured by `command`.
    pub(crate) fn measured_by(&mut self, command: String) {
        self.command = command;
    }

    pub(crate) fn add(
        &mut self,
        section: &'static str,
        metric: impl Into<String>,
        value: String,
        baseline: String,
        ratio: String,
        target: &str,
    ) {
        let row = Row {
            section,
            metric: metric.into(),
            value,
            baseline,
            ratio,
            target: target.to_string(),
            command: self.command.clone(),
        };
        println!(
            "{:<22} {:<58} {:>16}  baseline {:>16}  ratio {:>8}  {}",
            row.section, row.metric, row.value, row.baseline, row.ratio, row.target
        );
        self.rows.push(row);
    }
}

/// Percentile of sorted samples.
pub(crate) fn pct(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}

pub(crate) fn us(d: Duration) -> String {
    format!("{:.1} µs", d.as_secs_f64() * 1e6)
}

pub(crate) fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

/// A row of the table as markdown.
fn row_line(r: &Row) -> String {
    format!(
        "| {} | {} | {} | {} | {} | {} | `{}` |",
        r.section, r.metric, r.value, r.baseline, r.ratio, r.target, r.command
    )
}

/// Writes the rows of a partial run (`--only`) into an existing file:
/// each replaces the row with its section and metric, or is added after
/// the table's last row; every other row and the notes stay as they are.
pub(crate) fn merge_markdown(report: &Report, path: &Path) -> Result<()> {
    let old = std::fs::read_to_string(path)?;
    let mut lines: Vec<String> = old.lines().map(str::to_string).collect();
    let key = |line: &str| -> Option<(String, String)> {
        let mut cells = line.strip_prefix("| ")?.split(" | ");
        Some((cells.next()?.to_string(), cells.next()?.to_string()))
    };
    for r in &report.rows {
        let wanted = Some((r.section.to_string(), r.metric.clone()));
        match lines.iter().position(|l| key(l) == wanted) {
            Some(i) => lines[i] = row_line(r),
            None => {
                let last = lines
                    .iter()
                    .rposition(|l| l.starts_with("| "))
                    .context("no table to add a row to")?;
                lines.insert(last + 1, row_line(r));
            }
        }
    }
    std::fs::write(path, lines.join("\n") + "\n")?;
    Ok(())
}

pub(crate) fn write_markdown(report: &Report, path: &Path, quick: bool) -> Result<()> {
    let mut md = String::new();
    md.push_str("# Benchmarks\n\n");
    md.push_str(
        "Measured by `cargo xtask bench` (the bench binary `wasaga-bench`, release build) on a shared 2-core machine. \
         Each value is a median (p50) unless it says otherwise, beside a baseline measured in the same run; \
         compare the ratios, not the absolute times, across runs.\n\n",
    );
    if quick {
        md.push_str("**Quick mode**: fewer samples; for checking that the benchmarks run, not for quoting.\n\n");
    }
    md.push_str(
        "Each row's command measures it alone, after `cargo build --release -p wasaga -p wasaga-bench` \
         (with `CARGO_TARGET_DIR` set, `target/` is that directory).\n\n",
    );
    md.push_str("| section | metric | value | baseline (same run) | ratio | target | command |\n|---|---|---|---|---|---|---|\n");
    for r in &report.rows {
        md.push_str(&row_line(r));
        md.push('\n');
    }
    md.push_str("\n## Notes\n\n");
    for note in &report.notes {
        md.push_str(&format!("- {note}\n"));
    }
    std::fs::write(path, md)?;
    Ok(())
}
