//! Percentiles, formatting of durations, sizes and rates, and markdown tables.

use std::fmt;

/// Order statistics of a sample, in milliseconds.
#[derive(Debug, Clone, Copy)]
pub struct Summary {
    pub count: usize,
    pub min: f64,
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
    pub mean: f64,
}

impl Summary {
    /// `None` for an empty sample. NaNs are dropped.
    pub fn of(values: &[f64]) -> Option<Summary> {
        let mut v: Vec<f64> = values.iter().copied().filter(|x| !x.is_nan()).collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let mean = v.iter().sum::<f64>() / v.len() as f64;
        Some(Summary {
            count: v.len(),
            min: v[0],
            p50: percentile(&v, 50.0),
            p99: percentile(&v, 99.0),
            max: v[v.len() - 1],
            mean,
        })
    }
}

/// Nearest-rank percentile of an ascending, non-empty sample.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Milliseconds with a sensible number of digits: "0.84 ms", "12.3 ms", "4,021 ms".
pub fn ms(v: f64) -> String {
    if v.is_nan() {
        return "n/a".to_owned();
    }
    let a = v.abs();
    if a < 10.0 {
        format!("{v:.2} ms")
    } else if a < 100.0 {
        format!("{v:.1} ms")
    } else {
        format!("{} ms", thousands(v.round() as i64))
    }
}

/// An integer with thousands separators.
pub fn thousands(n: i64) -> String {
    let s = n.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    if n < 0 {
        format!("-{out}")
    } else {
        out
    }
}

/// A rate per second, rounded: "2,947/s".
pub fn rate(v: f64) -> String {
    if !v.is_finite() {
        return "n/a".to_owned();
    }
    format!("{}/s", thousands(v.round() as i64))
}

/// Bytes in B, KiB or MiB.
pub fn bytes(n: u64) -> String {
    let f = n as f64;
    if f < 1024.0 {
        format!("{n} B")
    } else if f < 1024.0 * 1024.0 {
        format!("{:.1} KiB", f / 1024.0)
    } else {
        format!("{:.1} MiB", f / (1024.0 * 1024.0))
    }
}

/// A ratio "3.2x"; "n/a" when either side is missing or zero.
pub fn ratio(ours: f64, theirs: f64) -> String {
    if !ours.is_finite() || !theirs.is_finite() || ours <= 0.0 || theirs <= 0.0 {
        return "n/a".to_owned();
    }
    format!("{:.2}x", theirs / ours)
}

/// A markdown table.
#[derive(Debug, Clone)]
pub struct Table {
    headers: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(headers: &[&str]) -> Table {
        Table {
            headers: headers.iter().map(|h| (*h).to_owned()).collect(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }
}

impl fmt::Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "| {} |", self.headers.join(" | "))?;
        writeln!(
            f,
            "|{}|",
            self.headers
                .iter()
                .map(|_| "---")
                .collect::<Vec<_>>()
                .join("|")
        )?;
        for r in &self.rows {
            let mut cells = r.clone();
            cells.resize(self.headers.len(), String::new());
            writeln!(f, "| {} |", cells.join(" | "))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        let s = Summary::of(&v).unwrap();
        assert_eq!(s.p50, 50.0);
        assert_eq!(s.p99, 99.0);
        assert_eq!(s.max, 100.0);
        assert!(Summary::of(&[]).is_none());
        assert_eq!(percentile(&[7.0], 99.0), 7.0);
    }

    #[test]
    fn formatting() {
        assert_eq!(thousands(1234567), "1,234,567");
        assert_eq!(thousands(-1000), "-1,000");
        assert_eq!(ms(4021.4), "4,021 ms");
        assert_eq!(ms(0.844), "0.84 ms");
        assert_eq!(ratio(2.0, 4.0), "2.00x");
        assert_eq!(ratio(0.0, 4.0), "n/a");
        let mut t = Table::new(&["a", "b"]);
        t.row(vec!["1".into()]);
        assert_eq!(t.to_string(), "| a | b |\n|---|---|\n| 1 |  |\n");
    }
}
