use super::*;

#[test]
fn error_body_leaves_out_an_empty_detail() {
    let b = ErrorBody {
        message: "No such workspace.".into(),
        detail: String::new(),
    };
    assert_eq!(
        serde_json::to_string(&b).expect("ser"),
        r#"{"message":"No such workspace."}"#
    );
    let back: ErrorBody = serde_json::from_str(r#"{"message":"m","detail":"d"}"#).expect("de");
    assert_eq!((back.message.as_str(), back.detail.as_str()), ("m", "d"));
    let bare: ErrorBody = serde_json::from_str(r#"{"message":"m"}"#).expect("de");
    assert_eq!(bare.detail, "");
}

#[test]
fn connection_info_has_its_exact_bytes_and_tolerates_missing_flags() {
    let info = ConnectionInfo {
        derp_map: DerpMap::default(),
        derp_force_websockets: true,
        disable_direct_connections: false,
    };
    assert_eq!(
        serde_json::to_string(&info).expect("ser"),
        r#"{"derp_map":{"Regions":{}},"derp_force_websockets":true,"disable_direct_connections":false}"#
    );
    let lean: ConnectionInfo = serde_json::from_str(r#"{"derp_map":{}}"#).expect("de");
    assert!(!lean.derp_force_websockets && !lean.disable_direct_connections);
    assert!(serde_json::from_str::<ConnectionInfo>("{}").is_err());
}

#[test]
fn enums_are_lowercase_words() {
    assert_eq!(
        serde_json::to_string(&[AgentStatus::Connected, AgentStatus::Disconnected]).expect("ser"),
        r#"["connected","disconnected"]"#
    );
    assert_eq!(
        serde_json::to_string(&[Severity::Ok, Severity::Warning, Severity::Error]).expect("ser"),
        r#"["ok","warning","error"]"#
    );
    assert!(Severity::Ok < Severity::Warning && Severity::Warning < Severity::Error);
}

#[test]
fn create_user_admin_flag_is_optional() {
    let r: CreateUserRequest =
        serde_json::from_str(r#"{"username":"a","email":"a@b","password":"12345678"}"#)
            .expect("de");
    assert!(!r.is_admin);
}

#[test]
fn workspace_has_its_exact_bytes() {
    let created = chrono::DateTime::parse_from_rfc3339("2024-01-02T03:04:05Z")
        .expect("time")
        .with_timezone(&Utc);
    let ws = Workspace {
        id: Uuid::from_u128(1),
        name: "dev".into(),
        owner: "alice".into(),
        agent_id: Uuid::from_u128(2),
        status: AgentStatus::Disconnected,
        last_seen_at: None,
        relay: Some(Relay {
            region_id: 999,
            region_code: "tether".into(),
            region_name: "tether".into(),
        }),
        created_at: created,
    };
    assert_eq!(
        serde_json::to_string(&ws).expect("ser"),
        concat!(
            r#"{"id":"00000000-0000-0000-0000-000000000001","name":"dev","owner":"alice","#,
            r#""agent_id":"00000000-0000-0000-0000-000000000002","status":"disconnected","#,
            r#""last_seen_at":null,"relay":{"region_id":999,"region_code":"tether","region_name":"tether"},"#,
            r#""created_at":"2024-01-02T03:04:05Z"}"#
        )
    );
}
