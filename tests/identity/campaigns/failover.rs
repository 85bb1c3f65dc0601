//! Failover campaign (guarantee 12): rounds in which the holder of an identity's etcd
//! lease goes away, by a graceful close, a SIGKILL or a SIGSTOP, and a standby on the
//! other machine (a network namespace of its own, see `lease`) takes over. Each holder records its fencing token and the wall-clock
//! window in which it held; two windows must never overlap, except for the paused
//! holder's moment after it resumes, which is measured.

use std::{collections::BTreeMap, time::Duration};

use super::{figure, size};
use crate::{
    lease::{Machines, TTL, skip_unless_root},
    support::{etcd::Etcd, now_ms},
};

const KINDS: [&str; 3] = ["graceful close", "SIGKILL", "SIGSTOP"];

#[test]
fn failovers_never_run_two_holders_at_once() {
    if skip_unless_root() {
        return;
    }
    let rounds = size(3, 102);
    let etcd = Etcd::single();
    let machines = Machines::new();
    let links = machines.links(&etcd);
    let mut machine = 0;
    let mut holder = machines.serve(machine, &links[machine]);
    let (_, mut token, _) = holder
        .holding(Duration::from_secs(10))
        .expect("the first holds");
    let mut takeovers: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    let mut after_resume = Vec::new();
    let mut overlaps = Vec::new();
    for round in 0..rounds {
        let kind = KINDS[round % KINDS.len()];
        machine = 1 - machine;
        let standby = machines.serve(machine, &links[machine]);
        // Until it waits on the lease (it finds the key held within milliseconds).
        assert!(
            standby.holding(Duration::from_millis(300)).is_none(),
            "round {round}: a second holder while the first held: {:?}",
            standby.said()
        );
        let ended_at = match kind {
            "graceful close" => {
                holder.signal(libc::SIGTERM);
                holder.closed(Duration::from_secs(10)).expect("closed")
            }
            "SIGKILL" => holder.kill(),
            _ => {
                let stopped = now_ms();
                holder.signal(libc::SIGSTOP);
                stopped
            }
        };
        let (_, next_token, since) = standby
            .holding(TTL + Duration::from_secs(10))
            .unwrap_or_else(|| panic!("round {round} ({kind}): no takeover"));
        assert!(
            next_token > token,
            "round {round}: tokens {token} then {next_token}"
        );
        if since < ended_at {
            overlaps.push((round, kind, ended_at - since));
        }
        takeovers
            .entry(kind)
            .or_default()
            .push(since.saturating_sub(ended_at));
        if kind == "SIGSTOP" {
            let resumed = now_ms();
            holder.signal(libc::SIGCONT);
            let (_, lost_at) = holder
                .lost(Duration::from_secs(5))
                .unwrap_or_else(|| panic!("round {round}: the resumed holder kept its endpoint"));
            after_resume.push(lost_at.saturating_sub(resumed));
        }
        drop(holder);
        holder = standby;
        token = next_token;
    }
    assert!(overlaps.is_empty(), "holders overlapped: {overlaps:?}");
    let summary: Vec<String> = takeovers
        .iter_mut()
        .map(|(kind, times)| {
            times.sort_unstable();
            format!(
                "{kind}: {} takeovers, median {} ms, max {} ms",
                times.len(),
                times[times.len() / 2],
                times[times.len() - 1]
            )
        })
        .collect();
    after_resume.sort_unstable();
    figure(
        "failover",
        format_args!(
            "{rounds} failovers (TTL {TTL:?}), 0 rounds with two holders at once, fencing \
             tokens always growing; {}; a paused holder closed its endpoint at most {} ms \
             after it resumed (median {} ms)",
            summary.join("; "),
            after_resume.last().copied().unwrap_or(0),
            after_resume
                .get(after_resume.len() / 2)
                .copied()
                .unwrap_or(0),
        ),
    );
}
