use super::*;

fn store(dir: &Path, max: usize) -> Store {
    Store::open(&dir.join("f.kv"), max).unwrap()
}

fn get(s: &Store, key: &str) -> Option<Vec<u8>> {
    s.with(key, |v| v.map(<[u8]>::to_vec))
}

#[test]
fn what_was_set_reads_back_after_the_store_is_opened_again() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = store(dir.path(), 1 << 20);
        s.set("fan", b"on").unwrap();
        s.set("count", b"1").unwrap();
        s.set("count", b"2").unwrap();
        s.set("gone", b"x").unwrap();
        assert!(s.delete("gone").unwrap());
        assert!(!s.delete("never").unwrap());
        s.sync().unwrap();
    }
    let s = store(dir.path(), 1 << 20);
    assert_eq!((get(&s, "fan"), get(&s, "count"), get(&s, "gone")), (Some(b"on".to_vec()), Some(b"2".to_vec()), None));
    assert_eq!(s.usage().1, 2);
}

#[test]
fn compare_and_set_changes_only_the_value_it_expects() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path(), 1 << 20);
    assert!(s.compare_and_set("n", None, Some(b"1")).unwrap(), "absent, expected absent");
    assert!(!s.compare_and_set("n", None, Some(b"9")).unwrap(), "present, expected absent");
    assert!(!s.compare_and_set("n", Some(b"0"), Some(b"9")).unwrap());
    assert!(s.compare_and_set("n", Some(b"1"), Some(b"2")).unwrap());
    assert_eq!(get(&s, "n"), Some(b"2".to_vec()));
    assert!(s.compare_and_set("n", Some(b"2"), None).unwrap(), "a swap to nothing deletes");
    assert_eq!(get(&s, "n"), None);
}

#[test]
fn two_threads_incrementing_by_compare_and_set_lose_no_update() {
    let dir = tempfile::tempdir().unwrap();
    let s = Arc::new(store(dir.path(), 1 << 20));
    let threads: Vec<_> = (0..2)
        .map(|_| {
            let s = s.clone();
            std::thread::spawn(move || {
                for _ in 0..500 {
                    loop {
                        let now = get(&s, "n");
                        let next =
                            now.as_deref().map_or(0, |v| std::str::from_utf8(v).unwrap().parse::<u64>().unwrap()) + 1;
                        if s.compare_and_set("n", now.as_deref(), Some(next.to_string().as_bytes())).unwrap() {
                            break;
                        }
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(get(&s, "n"), Some(b"1000".to_vec()));
}

#[test]
fn past_its_bound_a_change_that_grows_the_state_is_refused_and_one_that_shrinks_it_is_not() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path(), 200);
    s.set("a", &[0; 100]).unwrap();
    assert_eq!(s.set("b", &[0; 100]), Err(Refused::Full { max: 200 }));
    assert_eq!(get(&s, "b"), None, "a refused change is not applied");
    s.set("a", &[0; 10]).unwrap();
    s.set("b", &[0; 100]).unwrap();
    assert!(s.usage().0 <= 200);
}

#[test]
fn a_torn_last_write_is_dropped_and_everything_before_it_kept() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f.kv");
    {
        let s = store(dir.path(), 1 << 20);
        s.set("kept", b"1").unwrap();
        s.set("torn", b"2").unwrap();
    }
    let len = std::fs::metadata(&path).unwrap().len();
    // The power went while the last record was being written.
    std::fs::OpenOptions::new().write(true).open(&path).unwrap().set_len(len - 3).unwrap();
    let s = store(dir.path(), 1 << 20);
    assert_eq!((get(&s, "kept"), get(&s, "torn")), (Some(b"1".to_vec()), None));
    // New writes follow the last intact record, not the torn bytes.
    s.set("after", b"3").unwrap();
    drop(s);
    let s = store(dir.path(), 1 << 20);
    assert_eq!(get(&s, "after"), Some(b"3".to_vec()));
}

#[test]
fn the_log_is_compacted_once_it_holds_mostly_old_values_and_reads_back_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f.kv");
    let s = store(dir.path(), 1 << 20);
    for i in 0..5_000u32 {
        s.set("counter", i.to_string().as_bytes()).unwrap();
        s.set(&format!("k{}", i % 10), &[1; 50]).unwrap();
    }
    let len = std::fs::metadata(&path).unwrap().len();
    assert!(len < 100 << 10, "10,000 writes of 11 live keys left a {len}-byte log");
    drop(s);
    let s = store(dir.path(), 1 << 20);
    assert_eq!(get(&s, "counter"), Some(b"4999".to_vec()));
    assert_eq!(s.keys("k").len(), 10);
}

#[test]
fn keys_lists_by_prefix_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path(), 1 << 20);
    for k in ["room/b", "room/a", "roof", "z"] {
        s.set(k, b"").unwrap();
    }
    assert_eq!(s.keys("room/"), ["room/a", "room/b"]);
    assert_eq!(s.keys("").len(), 4);
}

#[test]
fn keys_must_be_short_and_hold_no_newline() {
    assert!(check_key("room/kitchen").is_ok());
    assert!(check_key("").is_err());
    assert!(check_key(&"k".repeat(MAX_KEY_BYTES + 1)).is_err());
    assert!(check_key("a\nb").is_err());
}

#[test]
fn instances_and_versions_of_one_function_share_its_store() {
    let dir = tempfile::tempdir().unwrap();
    let stores = Stores::new(dir.path().join("state"));
    let a = stores.open("fan", 1 << 20).unwrap();
    a.set("k", b"v").unwrap();
    let b = stores.open("fan", 1 << 20).unwrap();
    assert_eq!(get(&b, "k"), Some(b"v".to_vec()));
    assert_eq!(get(&stores.open("pump", 1 << 20).unwrap(), "k"), None, "namespaced by function");
}
