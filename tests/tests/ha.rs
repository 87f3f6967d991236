//! High availability against a real ZooKeeper ensemble (Debian's `zookeeper`, three servers on
//! loopback): the bridge's ZooKeeper store, its fencing by leadership epoch, and failures of
//! ZooKeeper servers.

use std::time::Duration;

use outpost_bridge::ha::{self, ZkUrl};
use outpost_bridge::store::{StateStore, StoreError, Table, Write, ZkStore};
use outpost_tests::zookeeper::Ensemble;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// A session and a store fenced at a freshly taken epoch: what a newly elected bridge has.
fn leader_store(rt: &tokio::runtime::Runtime, url: &ZkUrl) -> (ZkStore, ha::Epoch) {
    let client = rt
        .block_on(ha::connect(url, Duration::from_secs(4)))
        .unwrap();
    let epoch = rt.block_on(ha::take_epoch(&client, url)).unwrap();
    let store = ZkStore::open(client, url.clone(), rt.handle().clone(), epoch).unwrap();
    (store, epoch)
}

fn put(table: Table, key: &str, bytes: Vec<u8>) -> Write {
    Write {
        table,
        key: key.into(),
        value: Some(bytes),
    }
}

#[test]
fn the_zookeeper_store_keeps_records_and_refuses_a_deposed_leader() {
    let mut zk = Ensemble::start(3).unwrap();
    let url = ZkUrl::parse(&zk.url("/outpost")).unwrap();
    let rt = runtime();
    let (mut first, e1) = leader_store(&rt, &url);
    assert_eq!(e1.number, 1);

    // Records of every kind of key, some big enough that one commit takes several requests
    // (each at most 512 KiB), and 3,000 small ones.
    let mut writes = vec![
        put(Table::Apps, "/web", br#"{"id":"/web"}"#.to_vec()),
        put(Table::Apps, "/ops/db", br#"{"id":"/ops/db"}"#.to_vec()),
    ];
    for i in 0..3 {
        writes.push(put(
            Table::Apps,
            &format!("/big/{i}"),
            vec![b'x'; 400 * 1024],
        ));
    }
    for i in 0..3000 {
        writes.push(put(
            Table::Tasks,
            &format!("web.{i:05}"),
            format!(r#"{{"n":{i}}}"#).into_bytes(),
        ));
    }
    first.commit(&writes).unwrap();
    let apps = first.load(Table::Apps).unwrap();
    let keys: Vec<&str> = apps.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, ["/big/0", "/big/1", "/big/2", "/ops/db", "/web"]);
    assert_eq!(apps[0].1.len(), 400 * 1024);
    assert_eq!(first.load(Table::Tasks).unwrap().len(), 3000);

    // Updates and deletes; a delete of a record that is not there is nothing.
    first
        .commit(&[
            put(Table::Apps, "/web", br#"{"id":"/web","v":2}"#.to_vec()),
            Write::delete(Table::Apps, "/ops/db"),
            Write::delete(Table::Apps, "/never"),
        ])
        .unwrap();
    let apps = first.load(Table::Apps).unwrap();
    assert_eq!(apps.len(), 4);
    assert_eq!(apps[3], ("/web".into(), br#"{"id":"/web","v":2}"#.to_vec()));

    // A record ZooKeeper cannot hold is refused by name, and nothing of its commit applied.
    let e = first
        .commit(&[
            put(Table::Apps, "/small", b"{}".to_vec()),
            put(Table::Apps, "/huge", vec![b'x'; 1 << 20]),
        ])
        .unwrap_err();
    assert!(
        e.to_string().contains("/huge") && e.to_string().contains("bytes"),
        "{e}"
    );
    assert!(
        first
            .load(Table::Apps)
            .unwrap()
            .iter()
            .all(|(k, _)| k != "/small")
    );

    // A restarted bridge finds all of it (a new session, the next epoch).
    let (mut second, e2) = leader_store(&rt, &url);
    assert_eq!(e2.number, 2);
    assert_eq!(second.load(Table::Tasks).unwrap().len(), 3000);
    // It knows which records exist: updating one is not a failed create.
    second
        .commit(&[put(Table::Tasks, "web.00001", b"{}".to_vec())])
        .unwrap();

    // The first bridge was deposed by that epoch: its commits are refused, as fenced.
    let refused = first.commit(&[put(Table::Apps, "/web", b"{}".to_vec())]);
    assert!(matches!(refused, Err(StoreError::Fenced(_))), "{refused:?}");
    let apps = second.load(Table::Apps).unwrap();
    assert_eq!(
        apps[3].1,
        br#"{"id":"/web","v":2}"#.to_vec(),
        "nothing of it applied"
    );

    // One ZooKeeper server down (the quorum stands): commits go on. The session may have been
    // on that server and moves to another (ConnectionLoss meanwhile): the owner keeps a failed
    // commit's writes for the next, as this loop does.
    zk.kill(0);
    outpost_tests::wait::until(
        "a commit with one server down",
        Duration::from_secs(20),
        || {
            second
                .commit(&[put(Table::Apps, "/after-kill", b"{}".to_vec())])
                .ok()
        },
    )
    .unwrap();
    zk.start_server(0).unwrap();
    zk.wait_serving(Duration::from_secs(30)).unwrap();
    assert!(
        second
            .load(Table::Apps)
            .unwrap()
            .iter()
            .any(|(k, _)| k == "/after-kill")
    );
}
