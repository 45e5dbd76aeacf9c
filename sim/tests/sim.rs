//! The simulation under `cargo test`: a fixed set of seeds, each checked; one seed run twice
//! gives the same history, record for record; and each re-introduced bug is still caught by
//! the seed that first caught it.
//!
//! More seeds: `cargo run --release -p gwmon-sim -- --seeds 10000` (or `GWMON_SIM_SEEDS`);
//! the mutation search: `cargo run --profile sim -p gwmon-sim -- --mutation NAME --until-caught`.

use gwmon_proto::mutation::Mutation;
use gwmon_sim::run::{run, Options};

/// Seeds every `cargo test` runs. A seed that once found a bug stays here for good.
const SEEDS: &[u64] = &[0, 1, 2, 3, 4, 5, 6, 7, 8, 9];

#[test]
fn fixed_seeds_keep_every_promise() {
    let failures: Vec<String> = SEEDS
        .iter()
        .map(|seed| run(&Options::new(*seed)))
        .filter(|out| !out.ok())
        .map(|out| out.report())
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn one_seed_replays_the_same_history() {
    let a = run(&Options::new(7));
    let b = run(&Options::new(7));
    assert!(
        a.history.len() > 1000,
        "the run recorded too little to compare: {} records",
        a.history.len()
    );
    let first_difference = a.history.iter().zip(&b.history).position(|(x, y)| x != y);
    assert!(
        first_difference.is_none() && a.history.len() == b.history.len(),
        "seed 7 ran differently the second time: {} vs {} records, first difference: {:?}",
        a.history.len(),
        b.history.len(),
        first_difference.map(|i| (
            a.history[i].to_string(),
            b.history.get(i).map(ToString::to_string)
        ))
    );
}

/// Each re-introduced bug, with the first seed of `gwmon-sim --mutation NAME --until-caught`
/// that caught it (see the note in sim/README.md for how many seeds each took).
const CAUGHT_BY: &[(Mutation, u64)] = &[
    (Mutation::AckWithoutQuorum, 42),
    (Mutation::PromoteBeforeFence, 3),
];

#[test]
fn every_reintroduced_bug_is_caught() {
    for (m, seed) in CAUGHT_BY {
        let clean = run(&Options::new(*seed));
        assert!(clean.ok(), "without the bug:\n{}", clean.report());
        let mut o = Options::new(*seed);
        o.mutation = Some(*m);
        let out = run(&o);
        assert!(
            out.error.is_none(),
            "{}: the harness failed: {:?}",
            m.name(),
            out.error
        );
        assert!(
            !out.violations.is_empty(),
            "{} is no longer caught by seed {seed}",
            m.name()
        );
    }
}
