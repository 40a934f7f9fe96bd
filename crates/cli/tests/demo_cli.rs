//! `confsync demo --exit`, the real binary: the whole scenario through the service (add-on API,
//! push notifications, scheduler, outbox, write-back race) ends with every meeting matching its
//! event, and each step says what confsync did.

#[test]
fn the_demo_plays_every_step_and_verifies_its_meetings() {
    let data = std::env::temp_dir().join(format!("confsync-demo-test-{}", std::process::id()));
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_confsync"))
        .args(["demo", "--exit", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&data)
        .env_remove("CONFSYNC_LOG")
        .output()
        .expect("the binary runs");
    let _ = std::fs::remove_dir_all(&data);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    for expected in [
        "Alice moves \"Planning\" to 10:00\n    confsync: push notification -> incremental sync -> provider: update x1",
        "Alice only changes the colour (no provider call expected)\n    confsync: push notification -> incremental sync -> no provider call",
        "Bob accepts the invitation (no provider call expected)\n    confsync: push notification -> incremental sync -> no provider call",
        "provider: update_occurrence x1",
        "provider: cancel_occurrence x1",
        "provider: delete x1",
        "confsync: push notification -> full sync",
        "join link written back into the event x1",
        "(Alice's concurrent edit kept), join link updated to the new one",
        "check: every meeting matches its event",
    ] {
        assert!(
            stdout.contains(expected),
            "missing {expected:?} in\n{stdout}"
        );
    }
    assert!(!stdout.contains("cs_"), "the demo's API key is not printed");
}
