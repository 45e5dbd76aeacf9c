//! A run's logs: the processes' tracing output (with `GWMON_SIM_LOG`, stamped with
//! simulated time), and the monitors' timeout decisions taken into the history. Check (f)
//! judges when a gateway was declared failed, not when its fence ran, since a fence may
//! wait out a redeploy hold long after the fault that caused it.
//!
//! [`install`] sets both up on the run's thread (a seed runs on one thread) until its guard
//! drops: each "gateway timed out" of the liveness loop becomes an [`Event::TimedOut`].

use std::cell::RefCell;

use tracing::field::{Field, Visit};
use tracing::Level;
use tracing::{Event as TracingEvent, Subscriber};
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::EnvFilter;

use crate::world::{Event, World};

const TARGET: &str = "gwmon_monitor::liveness";
const MESSAGE: &str = "gateway timed out";

thread_local! {
    static SINK: RefCell<Option<World>> = const { RefCell::new(None) };
}

/// Log lines stamped with simulated time, to read beside the trace.
struct SimTime;

impl tracing_subscriber::fmt::time::FormatTime for SimTime {
    fn format_time(&self, w: &mut tracing_subscriber::fmt::format::Writer<'_>) -> std::fmt::Result {
        match turmoil::sim_elapsed() {
            Some(t) => write!(w, "{:>9.3}s", t.as_secs_f64()),
            None => write!(w, "{:>10}", "-"),
        }
    }
}

/// Until dropped: this thread's logs go to stderr (if `GWMON_SIM_LOG` names a filter) and
/// its timeout decisions into `world`'s history.
pub fn install(world: &World) -> Installed {
    SINK.with(|s| *s.borrow_mut() = Some(world.clone()));
    let print = std::env::var("GWMON_SIM_LOG").ok().map(|filter| {
        tracing_subscriber::fmt::layer()
            .with_timer(SimTime)
            .with_ansi(false)
            .with_writer(std::io::stderr)
            .with_filter(EnvFilter::new(filter))
    });
    let subscriber = tracing_subscriber::registry()
        // A filter on metadata alone, so every other callsite is disabled once and for all
        // and costs nothing per event.
        .with(Decisions.with_filter(Targets::new().with_target(TARGET, Level::INFO)))
        .with(print);
    Installed {
        _default: tracing::subscriber::set_default(subscriber),
    }
}

pub struct Installed {
    _default: tracing::subscriber::DefaultGuard,
}

impl Drop for Installed {
    fn drop(&mut self) {
        SINK.with(|s| *s.borrow_mut() = None);
    }
}

struct Decisions;

#[derive(Default)]
struct Fields {
    message: bool,
    gateway: Option<String>,
    term: u64,
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        match field.name() {
            "message" => self.message = format!("{value:?}") == MESSAGE,
            "gateway" => self.gateway = Some(format!("{value:?}")),
            _ => {}
        }
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        if field.name() == "term" {
            self.term = value;
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "message" => self.message = value == MESSAGE,
            "gateway" => self.gateway = Some(value.to_owned()),
            _ => {}
        }
    }
}

impl<S: Subscriber> Layer<S> for Decisions {
    fn on_event(&self, event: &TracingEvent<'_>, _ctx: Context<'_, S>) {
        let mut f = Fields::default();
        event.record(&mut f);
        if let (true, Some(gateway)) = (f.message, f.gateway) {
            SINK.with(|s| {
                if let Some(world) = s.borrow().as_ref() {
                    world.record(Event::TimedOut {
                        gateway,
                        term: f.term,
                    });
                }
            });
        }
    }
}
