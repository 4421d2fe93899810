//! The Synapse harness starts a real homeserver, registers users, builds a room and reads it back.

use argus_testkit::synapse;

#[tokio::test]
async fn two_users_talk_in_a_room() {
    let Some(server) = synapse::synapse() else {
        return;
    };
    assert!(server.base_url().starts_with("http://127.0.0.1:"));
    let alice = server.register("alice").await.unwrap();
    let bob = server.register("Bob").await.unwrap();
    assert_ne!(alice.user_id, bob.user_id);
    assert!(alice.user_id.ends_with(&format!(":{}", server.server_name())));

    let room = alice.create_room(Some("General"), Some("Daily chat"), false).await.unwrap();
    alice.invite(&room, &bob.user_id).await.unwrap();
    bob.join(&room).await.unwrap();
    let sent = bob.send_text(&room, "hello alice").await.unwrap();
    let edit = bob.edit(&room, &sent, "hello, alice").await.unwrap();
    let redaction = alice.redact(&room, &edit, Some("tidy")).await.unwrap();
    assert!(sent.starts_with('$') && redaction.starts_with('$'));

    let page = alice.messages(&room, "b", 10).await.unwrap();
    let chunk = page["chunk"].as_array().unwrap();
    assert_eq!(chunk[0]["event_id"], redaction.as_str());
    let message = chunk.iter().find(|event| event["event_id"] == sent.as_str()).unwrap();
    assert_eq!(message["sender"], bob.user_id.as_str());
    assert_eq!(message["content"]["body"], "hello alice");

    let members = alice.joined_members(&room).await.unwrap();
    let joined = members["joined"].as_object().unwrap();
    assert_eq!(joined.len(), 2);
    assert!(joined.contains_key(&alice.user_id) && joined.contains_key(&bob.user_id));

    bob.leave(&room).await.unwrap();
    let members = alice.joined_members(&room).await.unwrap();
    assert_eq!(members["joined"].as_object().unwrap().len(), 1);

    // The full timeline reads back to the room's creation event.
    let all = alice.all_messages(&room).await.unwrap();
    assert_eq!(all.last().unwrap()["type"], "m.room.create");
}

#[tokio::test]
async fn a_stranger_cannot_read_a_private_room() {
    let Some(server) = synapse::synapse() else {
        return;
    };
    let owner = server.register("owner").await.unwrap();
    let stranger = server.register("stranger").await.unwrap();
    let room = owner.create_room(None, None, true).await.unwrap();
    let error = stranger.messages(&room, "b", 10).await.unwrap_err();
    assert!(format!("{error:#}").contains("M_FORBIDDEN"), "{error:#}");
    let state = owner.state(&room).await.unwrap();
    assert!(state.as_array().unwrap().iter().any(|event| event["type"] == "m.room.encryption"));
}

#[tokio::test]
async fn the_process_id_names_the_running_homeserver() {
    let Some(server) = synapse::synapse() else {
        return;
    };
    let pid = server.process_id().unwrap();
    let command = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    let command = String::from_utf8_lossy(&command).replace('\0', " ");
    assert!(command.contains("synapse.app.homeserver"), "{command}");
    // Its CPU time can be read (the figures a benchmark takes before and after a window).
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    assert!(stat.starts_with(&format!("{pid} (")), "{stat}");
}
