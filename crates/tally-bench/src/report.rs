//! Results: latency distributions and the table (or JSON) the bench prints.

use std::time::Duration;

use serde::Serialize;

/// Latencies, recorded in microseconds (1 µs to 10 min, 3 significant digits).
pub struct Latencies(hdrhistogram::Histogram<u64>);

impl Latencies {
    pub fn new() -> Self {
        #[allow(clippy::expect_used)] // constant, valid bounds
        let histogram = hdrhistogram::Histogram::new_with_bounds(1, 600_000_000, 3)
            .expect("valid histogram bounds");
        Self(histogram)
    }

    pub fn record(&mut self, latency: Duration) {
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.0.saturating_record(micros.max(1));
    }

    pub fn merge(&mut self, other: &Latencies) {
        let _ = self.0.add(&other.0);
    }

    pub fn count(&self) -> u64 {
        self.0.len()
    }

    /// p50, p90, p99 and max, in milliseconds.
    pub fn summary(&self) -> Option<Summary> {
        if self.0.is_empty() {
            return None;
        }
        let ms = |micros: u64| micros as f64 / 1000.0;
        Some(Summary {
            p50_ms: ms(self.0.value_at_quantile(0.50)),
            p90_ms: ms(self.0.value_at_quantile(0.90)),
            p99_ms: ms(self.0.value_at_quantile(0.99)),
            max_ms: ms(self.0.max()),
            samples: self.0.len(),
        })
    }
}

/// Percentiles of a latency distribution.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub samples: u64,
}

/// One line of the result table.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// The workload, e.g. `state-changes`.
    pub workload: String,
    /// Its parameters, e.g. `C=64, 10 s, 1000 apps`.
    pub params: String,
    /// Throughput and its unit, when the workload has one.
    pub throughput: Option<f64>,
    pub unit: Option<String>,
    /// Latency percentiles, when measured.
    pub latency: Option<Summary>,
    /// Anything else worth a number (e.g. RSS), as text.
    pub note: String,
    /// design.md's goal for this workload, if any.
    pub goal: String,
}

impl Row {
    pub fn new(workload: &str, params: String) -> Self {
        Self {
            workload: workload.to_owned(),
            params,
            throughput: None,
            unit: None,
            latency: None,
            note: String::new(),
            goal: String::new(),
        }
    }

    pub fn throughput(mut self, value: f64, unit: &str) -> Self {
        self.throughput = Some(value);
        self.unit = Some(unit.to_owned());
        self
    }

    pub fn latency(mut self, latencies: &Latencies) -> Self {
        self.latency = latencies.summary();
        self
    }

    pub fn note(mut self, note: impl Into<String>) -> Self {
        self.note = note.into();
        self
    }

    pub fn goal(mut self, goal: &str) -> Self {
        self.goal = goal.to_owned();
        self
    }
}

/// Prints one row as soon as it is known (stderr), so a long run shows progress.
pub fn announce(row: &Row) {
    eprintln!("{}", line(row));
}

fn line(row: &Row) -> String {
    let throughput = match (row.throughput, &row.unit) {
        (Some(value), Some(unit)) => format!("{value:.0} {unit}"),
        _ => "—".to_owned(),
    };
    let latency = row.latency.as_ref().map_or("—".to_owned(), |l| {
        format!(
            "{:.2} / {:.2} / {:.2} / {:.2}",
            l.p50_ms, l.p90_ms, l.p99_ms, l.max_ms
        )
    });
    format!(
        "| {} | {} | {} | {} | {} | {} |",
        row.workload, row.params, throughput, latency, row.note, row.goal
    )
}

/// The table of every row (Markdown), or JSON.
pub fn print(rows: &[Row], json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(rows)?);
        return Ok(());
    }
    println!("| workload | parameters | throughput | latency p50 / p90 / p99 / max (ms) | notes | goal (design.md) |");
    println!("|---|---|---|---|---|---|");
    for row in rows {
        println!("{}", line(row));
    }
    Ok(())
}
