//! `events [--follow]`: the event stream, resumed at another monitor without a gap.

use std::io::Write;

use gwmon_proto::v1;

use crate::args::Format;
use crate::client::Admin;
use crate::error::CliError;
use crate::view::events::EventOut;

/// Prints the event stream. Any monitor serves it, so a broken stream is resumed at the
/// next one that answers: from the epoch before the last one printed, skipping the events
/// of that epoch already printed (several events share an epoch and a connection can
/// break between them).
pub(super) async fn run(
    admin: &mut Admin,
    follow: bool,
    after_epoch: Option<u64>,
    format: Format,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    // The last map epoch printed, and how many map events of it were printed.
    let mut last: Option<(u64, usize)> = None;
    loop {
        let (after, mut skip) = match last {
            Some((epoch, printed)) => (Some(epoch.saturating_sub(1)), Some((epoch, printed))),
            None => (after_epoch, None),
        };
        let req = v1::WatchEventsRequest {
            after_epoch: after,
            from_oldest: after.is_none(),
            stop_when_caught_up: !follow,
        };
        let mut stream = admin
            .call(|mut c| async move { c.watch_events(req).await })
            .await?
            .value;
        loop {
            let event = match stream.message().await {
                Ok(Some(e)) => e,
                Ok(None) if !follow => return Ok(()),
                Ok(None) => break,
                Err(status) if status.code() == tonic::Code::OutOfRange || !follow => {
                    return Err(CliError::Refused(status.message().to_owned()));
                }
                Err(_) => break,
            };
            let is_map_event = event.log_index != 0;
            if let Some((epoch, left)) = skip.as_mut() {
                if is_map_event && event.map_epoch == *epoch && *left > 0 {
                    *left -= 1;
                    continue;
                }
                if event.map_epoch <= *epoch && !is_map_event {
                    // A leader change the previous monitor may have reported already.
                    continue;
                }
            }
            skip = None;
            if is_map_event {
                last = match last {
                    Some((e, n)) if e == event.map_epoch => Some((e, n + 1)),
                    _ => Some((event.map_epoch, 1)),
                };
            }
            EventOut::from_wire(event).write(out, format)?;
        }
    }
}
