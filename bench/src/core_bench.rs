//! The bridge's core alone, in process (no broker, no store, no HTTP): where the bridge's own
//! time goes at N agents, to find what grows faster than the fleet. For each N:
//! - placing and launching an app of N instances (`hostname UNIQUE`): one `create_app`;
//! - N STARTING and N RUNNING status updates in batches of 1,024, each batch settled as the
//!   owner settles it;
//! - one scheduling pass with 100 instances waiting and no agent free (what every batch costs
//!   while a deploy waits for agents), and the pass that places one on a new agent;
//! - a tick (timers, every app, offers).
//!
//! `cargo run --release -p outpost-bench --bin core-bench -- 10000 30000 100000`

use std::time::{Duration, Instant};

use outpost_bench::join;
use outpost_bridge::app::AppDefinition;
use outpost_bridge::core::{Core, Effect};
use outpost_bridge::store::{RedbStore, StateStore};
use outpost_protocol::codec::decode;
use outpost_protocol::{AgentId, Command, CommandKind, TaskState, TaskStatus, Text};

fn launches(effects: Vec<Effect>) -> Vec<(String, String)> {
    effects
        .into_iter()
        .filter_map(|e| match e {
            Effect::Publish { topic, payload } if topic.ends_with("/cmd") => {
                let agent = topic.split('/').nth(3)?.to_string();
                match decode::<Command>(&payload).ok()?.kind {
                    CommandKind::Launch(spec) => Some((agent, spec.task_id.to_string())),
                    _ => None,
                }
            }
            _ => None,
        })
        .collect()
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn run(n: usize) {
    let rss0 = outpost_bridge::memory::rss_kib();
    let mut core = Core::default();
    let mut now = 1_000_000u64;
    let t = Instant::now();
    for i in 0..n {
        join(&mut core, now, &format!("sim-{i:06}"));
    }
    core.settle(now);
    let _ = core.take_writes();
    let _ = core.take_effects();
    let register = t.elapsed();
    let app = format!(
        r#"{{"id":"/fleet","instances":{n},"cpus":0.1,"mem":16,"constraints":[["hostname","UNIQUE"]],
        "container":{{"type":"DOCKER","docker":{{"image":"busybox","network":"HOST"}}}}}}"#
    );
    let def = AppDefinition::parse(app.as_bytes(), None).unwrap();
    let t = Instant::now();
    core.create_app(now, def).unwrap();
    // The owner's steps: one launch chunk each, with its writes encoded per step.
    let mut batch = Vec::new();
    let (mut encode, mut decode) = (Duration::ZERO, Duration::ZERO);
    let mut launched = Vec::new();
    loop {
        let t = Instant::now();
        batch.extend(core.take_writes());
        encode += t.elapsed();
        // The simulated agents' side (not the core's time).
        let t = Instant::now();
        launched.extend(launches(core.take_effects()));
        decode += t.elapsed();
        if !core.more_to_launch() {
            break;
        }
        core.settle(now);
    }
    let place = t.elapsed() - encode - decode;
    let writes = batch.len();
    let bytes: usize = batch
        .iter()
        .map(|w| w.value.as_ref().map_or(0, Vec::len))
        .sum();
    let dir = std::env::temp_dir().join(format!("core-bench-{}-{n}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let mut store = RedbStore::open(&dir.join("bridge.redb")).unwrap();
    let t = Instant::now();
    store.commit(&batch).unwrap();
    let commit = t.elapsed();
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(launched.len(), n, "every instance placed");
    let mut statuses = Duration::ZERO;
    let mut uuid = 0u64;
    for state in [TaskState::Starting, TaskState::Running] {
        for chunk in launched.chunks(1024) {
            let t = Instant::now();
            for (agent, task) in chunk {
                uuid += 1;
                let mut u = [0u8; 16];
                u[..8].copy_from_slice(&uuid.to_be_bytes());
                core.on_status(
                    now,
                    &TaskStatus {
                        version: 1,
                        agent_id: AgentId::new(agent).unwrap(),
                        task_id: Text::new(task).unwrap(),
                        uuid: u,
                        state,
                        timestamp_ms: now,
                        ..Default::default()
                    },
                );
            }
            core.settle(now);
            let _ = core.take_writes();
            let _ = core.take_effects();
            statuses += t.elapsed();
        }
    }
    let mut def = core.app("/fleet").unwrap().def.clone();
    def.instances = (n + 100) as u32;
    core.update_app(now, def, true).unwrap();
    let _ = core.take_writes();
    let _ = core.take_effects();
    // A pass with 100 waiting and nowhere to go: what each batch costs while they wait.
    now += 1;
    let t = Instant::now();
    core.tick(now);
    let tick = t.elapsed();
    let _ = core.take_effects();
    let t = Instant::now();
    join(&mut core, now, "new-000001");
    core.settle(now);
    let join_pass = t.elapsed();
    let placed = launches(core.take_effects()).len();
    let rss = outpost_bridge::memory::rss_kib().saturating_sub(rss0);
    // The copy a big read is built from: made on the owner, dropped on a reader's thread.
    let t = Instant::now();
    let snapshot = core.snapshot();
    let copy = t.elapsed();
    let t = std::thread::spawn(move || {
        let t = Instant::now();
        drop(snapshot);
        t.elapsed()
    });
    let dropped = t.join().unwrap_or_default();
    println!("## {n} agents (core only)");
    println!("register: {}", ms(register));
    println!("create_app placing and launching {n}: {}", ms(place));
    println!(
        "its {writes} writes: encoded in {}, {} MB; committed to redb in {}",
        ms(encode),
        bytes / 1_000_000,
        ms(commit)
    );
    println!(
        "{} status updates in batches of 1,024: {} ({:.1} µs each)",
        2 * n,
        ms(statuses),
        statuses.as_secs_f64() * 1e6 / (2 * n) as f64
    );
    println!("tick with 100 instances waiting: {}", ms(tick));
    println!(
        "an agent joins and gets one of them: {} ({placed} launched)",
        ms(join_pass)
    );
    println!(
        "snapshot for a big read: copied in {}, dropped (on another thread) in {}",
        ms(copy),
        ms(dropped)
    );
    println!(
        "core RSS growth: {rss} KiB ({:.2} KiB per agent with its task)",
        rss as f64 / n as f64
    );
    println!();
}

fn main() {
    let sizes: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    for n in if sizes.is_empty() {
        vec![10_000]
    } else {
        sizes
    } {
        run(n);
    }
}
