//! Calendar's `conferenceData` for our conferences, built in ONE place: the add-on API's answer
//! (what the add-on hands to ConferenceDataBuilder), the recreate path's repointing of an event
//! at a new meeting, and the write-back of a new join link. Which conferences are ours is the
//! [`Recognizer`]'s business; its solution names and parameter key are the only literals.

use confsync_core::plan::Recognizer;
use serde_json::{Value, json};

/// The add-on parameter our conferences carry their id in, unless configured otherwise.
pub const DEFAULT_PARAMETER_KEY: &str = "confsyncConferenceId";
/// The conference solution name, unless configured otherwise.
pub const DEFAULT_SOLUTION_NAME: &str = "confsync";

/// The recogniser of a default deployment.
pub fn default_recognizer() -> Recognizer {
    Recognizer {
        solution_names: vec![DEFAULT_SOLUTION_NAME.into()],
        parameter_key: Some(DEFAULT_PARAMETER_KEY.into()),
    }
}

fn label(join_url: &str) -> &str {
    join_url.split("://").nth(1).unwrap_or(join_url)
}

fn video_entry(join_url: &str) -> Value {
    json!({"entryPointType": "video", "uri": join_url, "label": label(join_url)})
}

/// A new conference's data, as the add-on answers it: our solution (the recogniser's first
/// name), the join link as the video entry point, our parameter with the conference id.
pub fn fresh(recognizer: &Recognizer, conference_id: &str, join_url: &str) -> Value {
    let name = recognizer
        .solution_names
        .first()
        .map_or(DEFAULT_SOLUTION_NAME, String::as_str);
    let mut data = json!({
        "conferenceId": conference_id,
        "conferenceSolution": {"key": {"type": "addOn"}, "name": name},
        "entryPoints": [video_entry(join_url)],
        "notes": "Join with the link above.",
    });
    if let Some(key) = &recognizer.parameter_key {
        data["parameters"]["addOnParameters"]["parameters"][key.as_str()] =
            Value::from(conference_id);
    }
    data
}

/// The event's conference data pointed at a new meeting: the same solution and add-on
/// parameters, the new conference id (also as our parameter), and the new join link as the
/// only entry point (phone numbers, PINs and other entry points belong to the old meeting).
/// The signature is left to Calendar to make again.
pub fn repointed(
    recognizer: &Recognizer,
    existing: Option<&Value>,
    conference_id: &str,
    join_url: &str,
) -> Value {
    let mut data = existing
        .cloned()
        .filter(Value::is_object)
        .unwrap_or_else(|| json!({}));
    if let Some(map) = data.as_object_mut() {
        map.remove("signature");
        map.remove("createRequest");
    }
    data["conferenceId"] = Value::from(conference_id);
    data["entryPoints"] = json!([video_entry(join_url)]);
    if let Some(key) = &recognizer.parameter_key {
        data["parameters"]["addOnParameters"]["parameters"][key.as_str()] =
            Value::from(conference_id);
    }
    data
}

/// The event's conference data with a new join link in its video entry points (everything
/// else as it is).
pub fn with_join_url(existing: Option<&Value>, join_url: &str) -> Value {
    let mut data = existing.cloned().unwrap_or_default();
    if let Some(entry_points) = data.get_mut("entryPoints").and_then(Value::as_array_mut) {
        for entry in entry_points
            .iter_mut()
            .filter(|e| e["entryPointType"] == "video")
        {
            entry["uri"] = Value::from(join_url);
            entry["label"] = Value::from(label(join_url));
        }
    }
    data
}

#[cfg(test)]
mod tests {
    use super::*;
    use confsync_core::model::Snapshot;

    #[test]
    fn a_fresh_conference_is_recognised_as_ours() {
        let r = default_recognizer();
        let data = fresh(&r, "m-1", "https://meet.example/m-1");
        let event = json!({"id": "e1", "status": "confirmed", "etag": "\"1\"",
            "organizer": {"email": "a@example.com", "self": true},
            "start": {"dateTime": "2027-01-01T10:00:00Z"}, "end": {"dateTime": "2027-01-01T11:00:00Z"},
            "conferenceData": data});
        let snapshot = Snapshot::from_json(&event).unwrap();
        let conference = snapshot.conference.as_ref().unwrap();
        assert_eq!(conference.conference_id.as_deref(), Some("m-1"));
        assert_eq!(
            conference.join_uri.as_deref(),
            Some("https://meet.example/m-1")
        );
        assert!(r.is_ours(conference), "{conference:?}");
    }

    #[test]
    fn repointing_keeps_the_solution_and_drops_the_old_meetings_entry_points() {
        let r = default_recognizer();
        let mut old = fresh(&r, "m-1", "https://meet.example/m-1");
        old["entryPoints"]
            .as_array_mut()
            .unwrap()
            .push(json!({"entryPointType": "phone", "uri": "tel:+1"}));
        old["signature"] = json!("sig");
        let new = repointed(&r, Some(&old), "m-2", "https://meet.example/m-2");
        assert_eq!(new["conferenceId"], "m-2");
        assert_eq!(new["conferenceSolution"], old["conferenceSolution"]);
        assert_eq!(new["entryPoints"].as_array().unwrap().len(), 1);
        assert_eq!(
            new["parameters"]["addOnParameters"]["parameters"][DEFAULT_PARAMETER_KEY],
            "m-2"
        );
        assert!(new.get("signature").is_none());
    }

    #[test]
    fn a_new_join_link_changes_only_the_video_entry_point() {
        let mut old = fresh(&default_recognizer(), "m-1", "https://meet.example/a");
        old["entryPoints"]
            .as_array_mut()
            .unwrap()
            .push(json!({"entryPointType": "phone", "uri": "tel:+1"}));
        let new = with_join_url(Some(&old), "https://meet.example/b");
        assert_eq!(new["entryPoints"][0]["uri"], "https://meet.example/b");
        assert_eq!(new["entryPoints"][0]["label"], "meet.example/b");
        assert_eq!(new["entryPoints"][1]["uri"], "tel:+1");
        assert_eq!(new["conferenceId"], "m-1");
    }
}
