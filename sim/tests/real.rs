//! The simulation's checks (a)-(d) over real processes: three `gwmon` monitors and three
//! `gwmon-gateway` processes in network namespaces of their own, faults from outside, and a
//! history read from the gateways' target files (see `gwmon_sim::real` for the set-up and
//! how target files become the checker's events).
//!
//! Needs root (namespaces, iptables) and libfaketime; `.ci/run` installs what is missing.
//! Without them the test fails and says so: it never skips.
//!
//! The schedule, under half a minute of faults (the whole test takes about 40 s):
//!
//! 1. `kill -9` of gw1 while it serves; its group fails over; gw1 is restarted and gets its
//!    group back.
//! 2. SIGSTOP of gw2 past the grace, `config set failback_delay_ms` meanwhile; its group fails
//!    over; SIGCONT, and it fails back.
//! 3. The Raft leader cut off from the other monitors (gateways still reach it);
//!    `set-location` meanwhile; a new leader; `kill -9` of gw3 under the new leader; heal and
//!    restart gw3.
//! 4. The leader's wall clock two hours ahead; gw1 paused past the grace under it, gw3
//!    disabled and enabled again; then the clock back, and a follower's an hour behind.
//! 5. `kill -9` of gw2 and an immediate restart, the last fault: the quiet phase begins while
//!    the new process takes group 2 back.
//!
//! Then every fault is healed (`Quiet`), every ANA group must be served again within
//! [`BOUND`], the final state is read back, and the history is checked.

use std::time::{Duration, Instant};

use gwmon_sim::check::{check, recovery, Params};
use gwmon_sim::real::{Bins, Harness, GRACE_MS};
use gwmon_sim::world::{AdminOp, Event};

/// (d): every ANA group served again this long after the faults stop. A failback takes a
/// few beacons, `failback_prepare_ms` and `failback_delay_ms` (under 1 s each here); a
/// restarted gateway connects within a second or two. Twenty seconds is generous, so a miss
/// is a stuck group, not a slow machine.
const BOUND: Duration = Duration::from_secs(20);

/// How long a fault may take to show in the targets (a failover: the grace, a fence and a
/// promotion; a failback: a few beacons and the prepare time).
const WITHIN: Duration = Duration::from_secs(15);

fn sleep_ms(ms: u64) {
    std::thread::sleep(Duration::from_millis(ms));
}

/// Wait `what`, failing the test with `e` if the harness itself could not act.
fn ok<T>(what: &str, r: Result<T, String>) -> T {
    r.unwrap_or_else(|e| panic!("{what}: {e}"))
}

fn served_elsewhere(h: &Harness, ana: u32, not: &str) -> bool {
    h.servers(ana).iter().any(|s| s != not)
}

#[test]
fn real_processes_keep_every_promise() {
    let began = Instant::now();
    let built = gwmon_tests::bins::build(
        env!("CARGO_BIN_EXE_gwmon-sim"),
        &["gwmon-monitor", "gwmon-client", "nvme-gw"],
        &["gwmon", "gwmon-gateway", "nvme-gw"],
    );
    let bins = Bins {
        gwmon: built["gwmon"].clone(),
        gateway: built["gwmon-gateway"].clone(),
        nvme_gw: built["nvme-gw"].clone(),
    };
    let mut h = ok(
        "set up the real-process cluster",
        Harness::start(bins, &["gw1", "gw2", "gw3"]),
    );
    let set_up = began.elapsed();
    let grace = GRACE_MS;
    let (g1, g2, g3) = (h.owners["gw1"], h.owners["gw2"], h.owners["gw3"]);

    // 1. gw1 killed while serving: its target stays optimized until the fence makes it
    //    inaccessible; only then may another gateway serve group 1.
    h.kill_gateway("gw1");
    h.expect(
        "group 1 served elsewhere after gw1 was killed",
        WITHIN,
        |h| served_elsewhere(h, g1, "gw1"),
    );
    ok("restart gw1", h.start_gateway("gw1"));
    h.expect(
        "every group on its owner after gw1 restarted",
        WITHIN,
        |h| h.owners_serve_unless_damped(),
    );

    // 2. gw2 paused past the grace, with a config change meanwhile.
    ok("pause gw2", h.pause("gw2"));
    h.admin(AdminOp::SetFailbackDelay(500));
    h.expect(
        "group 2 served elsewhere while gw2 is stopped",
        WITHIN,
        |h| served_elsewhere(h, g2, "gw2"),
    );
    sleep_ms(grace);
    ok("resume gw2", h.resume("gw2"));
    h.expect("every group on its owner after gw2 resumed", WITHIN, |h| {
        h.owners_serve_unless_damped()
    });

    // 3. The leader cut off from the other monitors; gateways and the operator still reach
    //    it. An admin command and a gateway crash while it is cut off.
    let old = ok("find the leader", h.leader());
    let others: Vec<u64> = (1..=3).filter(|m| *m != old).collect();
    ok("partition the leader", h.partition(old));
    let cut = Instant::now();
    h.admin(AdminOp::SetLocation("gw3".into(), "rackB".into()));
    h.expect("a new leader among the other monitors", WITHIN, |h| {
        others
            .iter()
            .any(|m| h.leader_seen_by(*m).is_some_and(|l| l != old))
    });
    h.kill_gateway("gw3");
    h.expect(
        "group 3 served elsewhere while the old leader is cut off",
        WITHIN,
        |h| served_elsewhere(h, g3, "gw3"),
    );
    if let Some(rest) = Duration::from_secs(8).checked_sub(cut.elapsed()) {
        std::thread::sleep(rest);
    }
    ok("heal the leader", h.heal(old));
    ok("restart gw3", h.start_gateway("gw3"));
    h.expect(
        "every group on its owner after the partition",
        WITHIN,
        |h| h.owners_serve_unless_damped(),
    );

    // 4. Wall clocks: the leader two hours ahead while gw1 is paused past the grace (its
    //    fence and failover happen under the jumped clock) and gw3 is disabled and enabled;
    //    then back, and a follower an hour behind.
    let leader = ok("find the leader", h.leader());
    ok("jump the leader's clock", h.set_clock(leader, 7200));
    sleep_ms(1500);
    ok("pause gw1", h.pause("gw1"));
    h.admin(AdminOp::SetEnabled("gw3".into(), false));
    h.expect(
        "group 1 served elsewhere with the leader's clock ahead",
        WITHIN,
        |h| served_elsewhere(h, g1, "gw1"),
    );
    h.expect("group 3 moved off the disabled gw3", WITHIN, |h| {
        served_elsewhere(h, g3, "gw3")
    });
    ok("resume gw1", h.resume("gw1"));
    h.admin(AdminOp::SetEnabled("gw3".into(), true));
    ok("reset the leader's clock", h.set_clock(leader, 0));
    let follower = (1..=3).find(|m| *m != leader).unwrap_or(1);
    ok("jump a follower's clock", h.set_clock(follower, -3600));
    h.expect(
        "every group on its owner after the clock jumps",
        WITHIN,
        |h| h.owners_serve_unless_damped(),
    );
    ok("reset the follower's clock", h.set_clock(follower, 0));
    h.admin(AdminOp::SetLocation("gw1".into(), "rackA".into()));
    h.admin_idle(Duration::from_secs(60));

    // 5. The last fault: gw2 killed and restarted at once (within the grace: a redeploy).
    //    Its file still says optimized (a target outlives its process); the new process
    //    makes it inaccessible first and takes the group back through the map, so (d)
    //    measures a real return of group 2.
    h.kill_gateway("gw2");
    ok("restart gw2", h.start_gateway("gw2"));

    // Gateways that exited on their own (none should) are restarted before the quiet phase,
    // and noted.
    for (g, how) in h.exited_gateways() {
        h.missed.push(format!("{g} exited on its own: {how}"));
        ok("restart an exited gateway", h.start_gateway(&g));
    }

    // Quiet: every fault healed. Each group must be served again within BOUND; the run ends
    // once all have been served for five seconds without a break (or at BOUND + 5 s).
    h.rec.record(Event::Quiet);
    let quiet = Instant::now();
    let mut since: Option<Instant> = None;
    while quiet.elapsed() < BOUND + Duration::from_secs(5) {
        if h.all_served() {
            let s = *since.get_or_insert_with(Instant::now);
            if s.elapsed() >= Duration::from_secs(5) {
                break;
            }
        } else {
            since = None;
        }
        sleep_ms(20);
    }
    h.read_back();
    let (snapshots, skipped) = ok("stop the poller", h.stop_polling());
    let history = h.rec.history();
    let params = Params {
        ana_groups: h.ana_groups(),
        gateways: h.gateways.clone(),
        liveness_bound: BOUND,
        // (f) needs every fault's reach known to the millisecond; the simulation checks it.
        impairments: None,
        grace: None,
    };
    let violations = check(&history, &params);
    let text: String = history.iter().map(|r| format!("{r}\n")).collect();
    let file = h.dir.join("history.txt");
    let _ = std::fs::write(&file, &text);
    // The history without the periodic writes: shown with the test's output (on failure,
    // or with --nocapture).
    for r in history
        .iter()
        .filter(|r| !matches!(r.event, Event::Write { .. }))
    {
        println!("{r}");
    }
    let count = |f: fn(&Event) -> bool| history.iter().filter(|r| f(&r.event)).count();
    println!(
        "real run: {:.1}s ({:.1}s set-up); {} records: {} target changes, {} fences, {} writes, \
         {} admin commands; {snapshots} snapshots ({skipped} skipped); recovery after quiet {:?}",
        began.elapsed().as_secs_f64(),
        set_up.as_secs_f64(),
        history.len(),
        count(|e| matches!(e, Event::Target { .. })),
        count(|e| matches!(e, Event::Fenced { .. })),
        count(|e| matches!(e, Event::Write { .. })),
        count(|e| matches!(e, Event::AdminSent { .. })),
        recovery(&history, &params.ana_groups),
    );
    let mut report = String::new();
    for v in &violations {
        report.push_str(&format!("{v}\n"));
        for r in h.rec.around(v.at_seq, 25, 5) {
            let lineage = matches!(r.event, Event::Write { .. });
            if !lineage || r.seq == v.at_seq {
                report.push_str(&format!("    {r}\n"));
            }
        }
    }
    for m in &h.missed {
        report.push_str(&format!("schedule: {m}\n"));
    }
    assert!(
        snapshots > 1000,
        "the poller took only {snapshots} snapshots"
    );
    assert!(
        report.is_empty(),
        "the real run broke a promise (history in {}, logs next to it):\n{report}",
        file.display()
    );
}
