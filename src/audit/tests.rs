use super::*;

/// A one-event record, like a single-row statement writes.
fn row(id: i64, txid: u64, event: &str, new: Option<&str>) -> AuditRecord {
    AuditRecord {
        id,
        last_id: id,
        event_count: 1,
        occurred_at: 817_000_000_000_000 + id,
        txid,
        db_user: Some("alice".into()),
        app_user_id: None,
        client_addr: Some("127.0.0.1".into()),
        event: event.into(),
        table_name: Some("public.accounts".into()),
        shape: None,
        rows: None,
        events: Some(format!(
            "[[{id},{{\"id\":{id}}},null,{}]]",
            new.unwrap_or("null")
        )),
    }
}

/// A log of transactions (txid → rows), each in a chain entry of its own, in txid order; the
/// last entry's horizon is 1000.
fn build(txns: &[(u64, Vec<AuditRecord>)]) -> (Vec<ChainEntry>, Vec<(AuditRecord, Vec<u8>)>) {
    let batches: Vec<Vec<(u64, Vec<AuditRecord>)>> = txns.iter().map(|t| vec![t.clone()]).collect();
    build_batches(&batches)
}

/// A log of seals, each of several transactions (txid → rows).
fn build_batches(
    batches: &[Vec<(u64, Vec<AuditRecord>)>],
) -> (Vec<ChainEntry>, Vec<(AuditRecord, Vec<u8>)>) {
    let mut chain = Vec::new();
    let mut rows = Vec::new();
    let mut from = 0;
    for (i, batch) in batches.iter().enumerate() {
        let txns: Vec<SealedTxn> = batch
            .iter()
            .map(|(txid, txn_rows)| {
                let mut h = TxnHasher::new(*txid);
                for r in txn_rows {
                    h.add(r.id, r.last_id, &r.digest());
                    rows.push((r.clone(), r.digest().to_vec()));
                }
                SealedTxn::sealed(*txid, h)
            })
            .collect();
        let horizon = match batches.get(i + 1) {
            Some(next) => next[0].0,
            None => 1000,
        };
        chain.push(ChainEntry {
            position: i as i64 + 1,
            from_horizon: from,
            horizon,
            txns,
            chain_digest: Vec::new(),
        });
        from = horizon;
    }
    reseal(&mut chain, GENESIS);
    rows.sort_by_key(|(r, _)| r.id);
    (chain, rows)
}

/// Recompute every chain digest from `anchor` (what a forger with write access can do).
fn reseal(chain: &mut [ChainEntry], anchor: AuditDigest) {
    let mut previous = anchor;
    for e in chain.iter_mut() {
        let link = chain_digest(&previous, e.position, e.from_horizon, e.horizon, &e.txns).unwrap();
        e.chain_digest = link.to_vec();
        previous = link;
    }
}

/// Two interleaved transactions (ids 1,3,5 and 2,4) and a third (6), like concurrent writers.
fn sample() -> (Vec<ChainEntry>, Vec<(AuditRecord, Vec<u8>)>) {
    build(&[
        (
            900,
            vec![
                row(1, 900, "insert", Some("{\"id\": 1}")),
                row(3, 900, "update", Some("{\"n\": 3}")),
                row(5, 900, "delete", None),
            ],
        ),
        (
            901,
            vec![
                row(2, 901, "insert", Some("{\"id\": 2}")),
                row(4, 901, "insert", Some("{\"id\": 4}")),
            ],
        ),
        (902, vec![row(6, 902, "key_created", Some("{}"))]),
    ])
}

/// Feed `v` the records' ids, the chain entries and the records (one chunk), and finish.
fn feed<'a>(
    mut v: Verifier,
    chain: &[ChainEntry],
    rows: impl IntoIterator<Item = &'a (AuditRecord, Vec<u8>)>,
    head: Option<&Head>,
) -> Verdict {
    let rows: Vec<_> = rows.into_iter().collect();
    if let Some(h) = head {
        v = v.watching(h.position);
    }
    for (r, _) in &rows {
        v.check_ids(r.id, r.last_id, r.event_count, r.txid);
    }
    for e in chain {
        v.add_entry(e.clone());
    }
    for (r, d) in &rows {
        v.add_record(r, d);
    }
    v.finish(head)
}

fn verify(chain: &[ChainEntry], rows: &[(AuditRecord, Vec<u8>)], head: Option<&Head>) -> Verdict {
    feed(Verifier::new(GENESIS, None, None), chain, rows, head)
}

#[test]
fn serialisation_is_stable() {
    let r = AuditRecord {
        id: 1,
        last_id: 4,
        event_count: 5,
        occurred_at: 2,
        txid: 3,
        db_user: Some("u".into()),
        app_user_id: None,
        client_addr: None,
        event: "insert".into(),
        table_name: Some("t".into()),
        shape: None,
        rows: Some(vec![0xff]),
        events: Some("[]".into()),
    };
    let bytes = canonical_record_bytes(&r.fields());
    let mut expected = b"pgauth audit record v3".to_vec();
    for field in [
        &[1u8, 0, 0, 0, 1, b't'][..],
        &[0],
        &[1, 0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0, 1],
        &[1, 0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0, 4],
        &[1, 0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0, 5],
        &[1, 0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0, 2],
        &[1, 0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0, 3],
        &[1, 0, 0, 0, 1, b'u'],
        &[0],
        &[0],
        &[1, 0, 0, 0, 6, b'i', b'n', b's', b'e', b'r', b't'],
        &[1, 0, 0, 0, 1, 0xff],
        &[1, 0, 0, 0, 2, b'[', b']'],
    ] {
        expected.extend_from_slice(field);
    }
    assert_eq!(bytes, expected);
    // A known answer, computed independently with Python's hashlib.sha3_512 over the bytes
    // above: changing the definition breaks every stored chain.
    assert_eq!(
        hex(&r.digest()),
        "f14eeea495254bcf8bcbc726e070d00f3bcf58fb964410099caf123d12a9e136\
         7e0734d3a7a36c2bfd0492b1da249061aed669f83b7b6fb80ce821ab9425a03f"
    );
    assert_eq!(r.digest(), digest_of(&expected));
    // The kept prefix state gives the same digest.
    let f = r.fields();
    let prefix = prefix_hasher(f.table_name, f.shape);
    assert_eq!(record_digest_after(&prefix, &f), r.digest());
}

fn digest_of(bytes: &[u8]) -> AuditDigest {
    Sha3_512::digest(bytes).into()
}

#[test]
fn serialisation_is_unambiguous() {
    let base = row(7, 1, "insert", Some("{}"));
    let mut moved = base.clone();
    // The same bytes split differently between two fields must not collide.
    moved.db_user = Some("alic".into());
    moved.client_addr = Some("e127.0.0.1".into());
    assert_ne!(base.digest(), moved.digest());
    // NULL differs from empty.
    let mut empty = base.clone();
    empty.table_name = Some(String::new());
    let mut null_table = base.clone();
    null_table.table_name = None;
    assert_ne!(null_table.digest(), empty.digest());
    let mut null_user = base.clone();
    null_user.db_user = None;
    let mut empty_user = base.clone();
    empty_user.db_user = Some(String::new());
    assert_ne!(null_user.digest(), empty_user.digest());
    // Every field counts.
    let mut other = base.clone();
    other.id = 8;
    assert_ne!(base.digest(), other.digest());
    let mut other = base.clone();
    other.app_user_id = Some([0; 16]);
    assert_ne!(base.digest(), other.digest());
    let mut other = base.clone();
    other.txid = 2;
    assert_ne!(base.digest(), other.digest());
    let mut other = base.clone();
    other.last_id = 9;
    assert_ne!(base.digest(), other.digest());
    let mut other = base.clone();
    other.event_count = 2;
    assert_ne!(base.digest(), other.digest());
    let mut other = base.clone();
    other.events = other.events.map(|e| e.replace("{}", "{ }"));
    assert_ne!(base.digest(), other.digest(), "the events' exact bytes");
}

#[test]
fn chain_links_depend_on_everything_before() {
    let txn = |txid: u64, fill: u8| SealedTxn {
        txid,
        first_id: 1,
        last_id: 1,
        record_count: 1,
        txn_digest: vec![fill; 64],
    };
    let (t1, t2) = (vec![txn(10, 1)], vec![txn(11, 2)]);
    let link = |previous: &AuditDigest, position: i64, from: u64, horizon: u64, t: &[SealedTxn]| {
        chain_digest(previous, position, from, horizon, t).unwrap()
    };
    let a = link(&GENESIS, 1, 0, 11, &t1);
    let b = link(&a, 2, 11, 12, &t2);
    assert_ne!(link(&GENESIS, 1, 0, 11, &t2), a);
    assert_ne!(link(&a, 3, 11, 12, &t2), b, "position is covered");
    assert_ne!(link(&a, 2, 10, 12, &t2), b, "from_horizon is covered");
    assert_ne!(link(&a, 2, 11, 13, &t2), b, "horizon is covered");
    assert_ne!(link(&link(&GENESIS, 1, 0, 11, &t2), 2, 11, 12, &t1), b);
    // Every field of every transaction, and which transactions there are.
    let both = [txn(10, 1), txn(11, 2)];
    let base = link(&GENESIS, 1, 0, 12, &both);
    assert_ne!(link(&GENESIS, 1, 0, 12, &both[..1]), base);
    for change in 0..5 {
        let mut t = both.clone();
        match change {
            0 => t[1].txid = 9,
            1 => t[1].first_id = 2,
            2 => t[1].last_id = 2,
            3 => t[1].record_count = 2,
            _ => t[1].txn_digest[63] ^= 1,
        }
        assert_ne!(link(&GENESIS, 1, 0, 12, &t), base, "field {change}");
    }
    let mut short = both.clone();
    short[0].txn_digest.pop();
    assert_eq!(
        chain_digest(&GENESIS, 1, 0, 12, &short),
        None,
        "a malformed digest"
    );
    let d = [5u8; 64];
    assert_ne!(
        txn_digest(1, [(1, 1, &d), (2, 2, &d)]),
        txn_digest(1, [(1, 1, &d)])
    );
    assert_ne!(txn_digest(1, [(1, 1, &d)]), txn_digest(2, [(1, 1, &d)]));
    assert_ne!(txn_digest(1, [(1, 1, &d)]), txn_digest(1, [(2, 2, &d)]));
    assert_ne!(txn_digest(1, [(1, 1, &d)]), txn_digest(1, [(1, 3, &d)]));
}

#[test]
fn an_intact_log_verifies() {
    let (chain, rows) = sample();
    let v = verify(&chain, &rows, None);
    assert_eq!(
        v,
        Verdict {
            ok: true,
            checked: 6,
            first_bad_id: None,
            reason: None
        }
    );
    let head = Head {
        position: 3,
        digest: chain[2].chain_digest.clone(),
    };
    assert!(verify(&chain, &rows, Some(&head)).ok);
}

#[test]
fn a_modified_row_is_found_at_its_id() {
    let (chain, mut rows) = sample();
    rows[3].0.events = rows[3]
        .0
        .events
        .as_ref()
        .map(|e| e.replace("{\"id\": 4}", "{\"id\": 40}"));
    assert_ne!(rows[3].0.events, sample().1[3].0.events);
    let v = verify(&chain, &rows, None);
    assert!(!v.ok);
    assert_eq!(v.first_bad_id, Some(4));
    assert!(v.reason.unwrap().contains("modified"));
}

#[test]
fn a_modified_row_with_a_recomputed_digest_fails_its_transaction() {
    let (chain, mut rows) = sample();
    rows[4].0.event = "insert".into();
    rows[4].1 = rows[4].0.digest().to_vec();
    let v = verify(&chain, &rows, None);
    assert_eq!(
        v.first_bad_id,
        Some(1),
        "reported at the transaction's first id"
    );
    assert!(v.reason.unwrap().contains("do not match its digest"));
}

#[test]
fn a_deleted_row_is_found() {
    let (chain, mut rows) = sample();
    rows.remove(2); // id 3, transaction 900 (ids 1, 3, 5)
    let v = verify(&chain, &rows, None);
    assert_eq!(v.first_bad_id, Some(1));
    assert!(v.reason.unwrap().contains("3 audit records, 2 remain"));
    let (chain, mut rows) = sample();
    rows.remove(5); // the only row of the last transaction
    let v = verify(&chain, &rows, None);
    assert_eq!(v.first_bad_id, Some(6));
}

#[test]
fn a_forged_row_is_found() {
    let (chain, mut rows) = sample();
    let forged = row(7, 999, "insert", Some("{}"));
    let d = forged.digest().to_vec();
    rows.push((forged, d));
    let v = verify(&chain, &rows, None);
    assert_eq!(v.first_bad_id, Some(7));
    assert!(v.reason.unwrap().contains("not covered by the audit chain"));
    // Forged into an existing transaction, past its last id.
    let (chain, mut rows) = sample();
    let forged = row(8, 902, "insert", Some("{}"));
    let d = forged.digest().to_vec();
    rows.push((forged, d));
    assert_eq!(verify(&chain, &rows, None).first_bad_id, Some(8));
}

#[test]
fn swapped_rows_are_found_at_the_lower_id() {
    let (chain, mut rows) = sample();
    // Swap everything but the id, digests included.
    let (a, b) = (rows[1].clone(), rows[3].clone());
    rows[1] = (
        AuditRecord {
            id: 2,
            last_id: 2,
            ..b.0
        },
        b.1,
    );
    rows[3] = (
        AuditRecord {
            id: 4,
            last_id: 4,
            ..a.0
        },
        a.1,
    );
    assert_eq!(verify(&chain, &rows, None).first_bad_id, Some(2));
}

#[test]
fn chain_tampering_is_found() {
    // An entry modified.
    let (mut chain, rows) = sample();
    chain[1].txns[0].record_count = 3;
    let v = verify(&chain, &rows, None);
    assert!(!v.ok);
    // An entry removed together with its rows.
    let (mut chain, mut rows) = sample();
    chain.remove(1);
    rows.retain(|(r, _)| r.txid != 901);
    let v = verify(&chain, &rows, None);
    assert_eq!(v.first_bad_id, Some(6));
    assert!(v.reason.unwrap().contains("follows position 1"));
    // Two entries swapped, positions renumbered.
    let (mut chain, rows) = sample();
    chain.swap(0, 1);
    chain[0].position = 1;
    chain[1].position = 2;
    let v = verify(&chain, &rows, None);
    assert_eq!(v.first_bad_id, Some(1));
    assert!(v.reason.unwrap().contains("does not follow"));
}

#[test]
fn a_cut_tail_is_found_only_with_a_stored_head() {
    let (chain, rows) = sample();
    let head = Head {
        position: 3,
        digest: chain[2].chain_digest.clone(),
    };
    let (short_chain, short_rows) = (&chain[..2], &rows[..5]);
    assert!(verify(short_chain, short_rows, None).ok);
    let v = verify(short_chain, short_rows, Some(&head));
    assert!(!v.ok);
    assert_eq!(v.first_bad_id, None);
    assert!(v.reason.unwrap().contains("tail"));
    // A rewritten chain does not have the stored digest at the head's position.
    let mut wrong = head.clone();
    wrong.digest[0] ^= 1;
    assert_eq!(verify(&chain, &rows, Some(&wrong)).first_bad_id, Some(6));
}

#[test]
fn the_verifying_transaction_own_rows_are_skipped() {
    let (chain, mut rows) = sample();
    let mine = row(9, 1234, "key_created", None);
    let d = mine.digest().to_vec();
    rows.push((mine, d));
    let v = feed(
        Verifier::new(GENESIS, None, Some(1234)),
        &chain,
        &rows,
        None,
    );
    assert!(v.ok);
}

#[test]
fn verification_can_start_after_an_archived_part() {
    let (chain, rows) = sample();
    // Entries 2.. with the stored digest of entry 1 as anchor (what a retained checkpoint gives).
    let anchor: AuditDigest = chain[0].chain_digest.as_slice().try_into().unwrap();
    let kept = rows.iter().filter(|(r, _)| r.txid != 900);
    let verdict = feed(Verifier::new(anchor, None, None), &chain[1..], kept, None);
    assert!(verdict.ok, "{verdict:?}");
    assert_eq!(verdict.checked, 3);
    // A wrong anchor breaks the first link.
    let v = feed(Verifier::new(GENESIS, None, None), &chain[1..], &[], None);
    assert!(!v.ok);
}

#[test]
fn a_statement_record_is_checked_whole() {
    // Transaction 950 wrote one statement of three events (ids 10..12) in one record (the
    // frames' contents do not matter to the digest).
    let record = AuditRecord {
        last_id: 12,
        event_count: 3,
        events: None,
        shape: Some(r#"{"columns":[["id","integer",-1,true,true,23]]}"#.into()),
        rows: Some(vec![1, 2, 3, 4, 5, 6, 7, 8, 9]),
        ..row(10, 950, "insert", None)
    };
    let (chain, rows) = build(&[(950, vec![record])]);
    let v = verify(&chain, &rows, None);
    assert!(v.ok, "{v:?}");
    assert_eq!(v.checked, 3, "checked counts events");
    // One byte of the rows changed: reported at the record's first event id.
    let mut bad = rows.clone();
    if let Some(r) = bad[0].0.rows.as_mut() {
        r[4] ^= 1;
    }
    let v = verify(&chain, &bad, None);
    assert_eq!(v.first_bad_id, Some(10));
    assert!(v
        .reason
        .unwrap()
        .contains("audit record 10..12 was modified"));
    // A record claiming ids beyond its transaction's.
    let mut bad = rows.clone();
    bad[0].0.last_id = 13;
    bad[0].0.event_count = 4;
    let v = verify(&chain, &bad, None);
    assert_eq!(v.first_bad_id, Some(10));
    assert!(v.reason.unwrap().contains("outside the ids"));
    // A count that does not match the ids.
    let mut bad = rows.clone();
    bad[0].0.event_count = 2;
    let v = verify(&chain, &bad, None);
    assert_eq!(v.first_bad_id, Some(10));
    assert!(v.reason.unwrap().contains("overlaps"));
}

#[test]
fn unsealed_records_are_checked_by_their_own_digest() {
    let (chain, mut rows) = sample();
    // Transaction 1005 committed after the last seal (horizon 1000; next id 2000).
    let late = row(9, 1005, "insert", Some("{}"));
    let d = late.digest().to_vec();
    rows.push((late, d));
    let run = |rows: &[(AuditRecord, Vec<u8>)], next: u64| {
        let v = Verifier::new(GENESIS, None, None).with_unsealed(1000, next);
        feed(v, &chain, rows, None)
    };
    let v = run(&rows, 2000);
    assert!(v.ok, "{v:?}");
    assert_eq!(v.checked, 7);
    // Changed without its digest: found.
    let mut bad = rows.clone();
    bad[6].0.event = "delete".into();
    let v = run(&bad, 2000);
    assert_eq!(v.first_bad_id, Some(9));
    assert!(v.reason.unwrap().contains("not sealed yet"));
    // A transaction id the server has not assigned yet: forged.
    let v = run(&rows, 1004);
    assert_eq!(v.first_bad_id, Some(9));
    assert!(v.reason.unwrap().contains("not covered"));
    // Below the horizon and not in the chain: forged.
    let mut forged = rows.clone();
    forged[6].0.txid = 999;
    forged[6].1 = forged[6].0.digest().to_vec();
    assert_eq!(run(&forged, 2000).first_bad_id, Some(9));
}

#[test]
fn an_entry_at_or_above_its_horizon_is_forged() {
    // A transaction at or above its entry's horizon, with every digest recomputed.
    let (mut chain, rows) = sample();
    chain[2].horizon = chain[2].txns[0].txid;
    reseal(&mut chain, GENESIS);
    let v = verify(&chain, &rows, None);
    assert_eq!(v.first_bad_id, Some(6));
    assert!(v.reason.unwrap().contains("outside its range"));
    // Below where the entry starts.
    let (mut chain, rows) = sample();
    chain[2].from_horizon = 903;
    chain[2].horizon = 1000;
    reseal(&mut chain, GENESIS);
    let v = verify(&chain, &rows, None);
    assert_eq!(v.first_bad_id, Some(6));
    // An entry that does not start where the previous one ended leaves a gap in which
    // records could hide.
    let (mut chain, rows) = sample();
    chain[1].from_horizon = 800;
    reseal(&mut chain, GENESIS);
    let v = verify(&chain, &rows, None);
    assert_eq!(v.first_bad_id, Some(2));
    assert!(v
        .reason
        .unwrap()
        .contains("not where the previous entry ended"));
}

#[test]
fn a_seal_of_several_transactions_pinpoints_the_bad_one() {
    // One entry sealing three transactions, another sealing one.
    let (chain, rows) = build_batches(&[
        vec![
            (
                700,
                vec![row(1, 700, "insert", None), row(4, 700, "insert", None)],
            ),
            (702, vec![row(2, 702, "insert", None)]),
            (705, vec![row(3, 705, "delete", None)]),
        ],
        vec![(710, vec![row(5, 710, "insert", None)])],
    ]);
    assert_eq!(chain.len(), 2);
    let v = verify(&chain, &rows, None);
    assert!(v.ok, "{v:?}");
    assert_eq!(v.checked, 5);
    // A record of the entry's second transaction deleted: reported at that transaction.
    let kept: Vec<_> = rows.iter().filter(|(r, _)| r.id != 2).cloned().collect();
    let v = verify(&chain, &kept, None);
    assert_eq!(v.first_bad_id, Some(2));
    assert!(v.reason.unwrap().contains("transaction 702"));
    // A transaction dropped from the entry (digests recomputed): its record is not covered.
    let mut forged = chain.clone();
    forged[0].txns.remove(2);
    reseal(&mut forged, GENESIS);
    let v = verify(&forged, &rows, None);
    assert_eq!(v.first_bad_id, Some(3));
    assert!(v.reason.unwrap().contains("not covered"));
    // Transactions listed out of order (digests recomputed).
    let mut forged = chain.clone();
    forged[0].txns.swap(1, 2);
    reseal(&mut forged, GENESIS);
    let v = verify(&forged, &rows, None);
    assert_eq!(v.first_bad_id, Some(2));
    assert!(v.reason.unwrap().contains("out of order"));
    // The same transaction in two entries.
    let mut forged = chain.clone();
    let twice = forged[0].txns[0].clone();
    forged[1].txns.insert(0, SealedTxn { txid: 700, ..twice });
    forged[1].from_horizon = 700;
    forged[0].horizon = 700;
    reseal(&mut forged, GENESIS);
    assert!(!verify(&forged, &rows, None).ok);
}

#[test]
fn overlapping_or_unreserved_ids_are_found() {
    let (chain, mut rows) = sample();
    // A forged record reusing id 3's range, in a transaction not yet sealed.
    let forged = row(3, 1005, "insert", Some("{}"));
    let d = forged.digest().to_vec();
    rows.insert(3, (forged, d));
    let run = |rows: &[(AuditRecord, Vec<u8>)], max_id: i64| {
        let v = Verifier::new(GENESIS, None, None)
            .with_unsealed(1000, 2000)
            .with_max_id(max_id);
        feed(v, &chain, rows, None)
    };
    let v = run(&rows, 100);
    assert_eq!(v.first_bad_id, Some(3), "{v:?}");
    assert!(v.reason.unwrap().contains("overlaps"));
    // Beyond the ids reserved so far.
    let (_, mut rows) = sample();
    let late = row(9, 1005, "insert", Some("{}"));
    let d = late.digest().to_vec();
    rows.push((late, d));
    assert!(run(&rows, 9).ok);
    assert_eq!(run(&rows, 8).first_bad_id, Some(9));
}

#[test]
fn verification_in_chunks_gives_the_same_verdict() {
    let (chain, rows) = build_batches(&[
        vec![
            (
                700,
                vec![row(1, 700, "insert", None), row(4, 700, "insert", None)],
            ),
            (702, vec![row(2, 702, "insert", None)]),
        ],
        vec![(705, vec![row(3, 705, "delete", None)])],
        vec![(710, vec![row(5, 710, "insert", None)])],
    ]);
    // What the SQL layer does: each chunk's entries, then the records in their horizons.
    let chunked = |rows: &[(AuditRecord, Vec<u8>)]| {
        let mut v = Verifier::new(GENESIS, None, None).with_unsealed(1000, 2000);
        for (r, _) in rows {
            v.check_ids(r.id, r.last_id, r.event_count, r.txid);
        }
        for chunk in [&chain[..2], &chain[2..]] {
            let (from, to) = (chunk[0].from_horizon, chunk[chunk.len() - 1].horizon);
            for e in chunk {
                v.add_entry(e.clone());
            }
            for (r, d) in rows.iter().filter(|(r, _)| r.txid >= from && r.txid < to) {
                v.add_record(r, d);
            }
            v.end_chunk();
        }
        for (r, d) in rows.iter().filter(|(r, _)| r.txid >= 1000) {
            v.add_record(r, d);
        }
        v.finish(None)
    };
    let v = chunked(&rows);
    assert!(v.ok, "{v:?}");
    assert_eq!(v.checked, 5);
    assert_eq!(v, verify(&chain, &rows, None));
    // A record deleted from the first chunk is found when that chunk ends.
    let kept: Vec<_> = rows.iter().filter(|(r, _)| r.id != 4).cloned().collect();
    let v = chunked(&kept);
    assert_eq!(v.first_bad_id, Some(1));
    assert!(v
        .reason
        .unwrap()
        .contains("committed 2 audit records, 1 remain"));
    // A record not sealed yet is checked by its own digest.
    let mut late = rows.clone();
    let r = row(6, 1500, "insert", None);
    let d = r.digest().to_vec();
    late.push((r, d));
    assert!(chunked(&late).ok);
    late[5].0.event = "delete".into();
    assert_eq!(chunked(&late).first_bad_id, Some(6));
}

#[test]
fn a_sealed_transaction_takes_its_records_in_id_order() {
    let (a, b) = ([1u8; 64], [2u8; 64]);
    let mut shuffled = [(7, 9, b), (3, 3, a)];
    let t = SealedTxn::of_records(42, &mut shuffled);
    assert_eq!(
        t.txn_digest,
        txn_digest(42, [(3, 3, &a), (7, 9, &b)]).to_vec()
    );
    assert_eq!((t.first_id, t.last_id, t.record_count), (3, 9, 2));
}
