//! The simulation under `cargo test`: a fixed set of seeds, each checked; one seed run twice
//! must give the same history, event for event.
//!
//! More seeds: `cargo run --release -p gwmon-sim -- --seeds 10000` (or `GWMON_SIM_SEEDS`).

use gwmon_sim::run::{run, Options};

/// Seeds every `cargo test` runs. A seed that once found a bug stays here for good.
const SEEDS: std::ops::Range<u64> = 0..12;

fn report(out: &gwmon_sim::run::Outcome) -> String {
    let mut s = format!("seed {} failed:\n", out.seed);
    if let Some(e) = &out.error {
        s.push_str(&format!("  harness: {e}\n"));
    }
    for v in &out.violations {
        s.push_str(&format!("  {v}\n"));
    }
    s.push_str(&format!(
        "replay: cargo run --release -p gwmon-sim -- --seed {} --trace\n",
        out.seed
    ));
    s
}

#[test]
fn fixed_seeds_keep_every_promise() {
    let mut failures = Vec::new();
    for seed in SEEDS {
        let out = run(&Options::new(seed));
        if !out.ok() {
            failures.push(report(&out));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn one_seed_replays_the_same_history() {
    let a = run(&Options::new(7));
    let b = run(&Options::new(7));
    assert!(
        a.history.len() > 100,
        "the run recorded too little: {}",
        a.history.len()
    );
    let first_difference = a.history.iter().zip(&b.history).position(|(x, y)| x != y);
    assert!(
        first_difference.is_none() && a.history.len() == b.history.len(),
        "seed 7 ran differently the second time: {} vs {} records, first difference at {:?}",
        a.history.len(),
        b.history.len(),
        first_difference.map(|i| (
            a.history[i].to_string(),
            b.history.get(i).map(ToString::to_string)
        ))
    );
}
