//! The shipped example configurations stay valid and compile to the expected
//! engine spec, and every compiled spec satisfies the invariants of `engine::spec`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use hazgate::config::Config;
use hazgate::engine::EngineSpec;
use hazgate::model::{Colour, Direction, HazardSourceId};

fn load(name: &str) -> Config {
    let path = format!("{}/config/{name}", env!("CARGO_MANIFEST_DIR"));
    match Config::load_with_env(&path, Vec::new()) {
        Ok(config) => config,
        Err(error) => panic!("{path} is invalid:\n{error}"),
    }
}

/// The invariants listed at the top of `src/engine/spec.rs`.
fn assert_spec_invariants(spec: &EngineSpec) {
    for point in &spec.points {
        assert!(point.range_min < point.range_max, "{}", point.id);
        for direction in [Direction::High, Direction::Low] {
            let grades: Vec<_> = point
                .grades
                .iter()
                .filter(|g| g.direction == direction)
                .collect();
            for pair in grades.windows(2) {
                // Triggers never go backwards; equal only when the later grade is
                // more severe (a cut, or a higher colour).
                let more_severe = pair[1].power_cut || pair[1].colour > pair[0].colour;
                match direction {
                    Direction::High => assert!(
                        pair[0].trigger < pair[1].trigger
                            || (pair[0].trigger == pair[1].trigger && more_severe),
                        "{}",
                        point.id
                    ),
                    Direction::Low => assert!(
                        pair[0].trigger > pair[1].trigger
                            || (pair[0].trigger == pair[1].trigger && more_severe),
                        "{}",
                        point.id
                    ),
                }
                assert!(pair[0].colour <= pair[1].colour, "{}", point.id);
            }
        }
        for grade in &point.grades {
            match grade.direction {
                Direction::High => assert!(
                    grade.restore <= grade.trigger,
                    "{} {}",
                    point.id,
                    grade.name
                ),
                Direction::Low => assert!(
                    grade.restore >= grade.trigger,
                    "{} {}",
                    point.id,
                    grade.name
                ),
            }
            if grade.power_cut {
                assert_eq!(grade.on_delay_ms, 0, "{} {}", point.id, grade.name);
                assert_eq!(grade.off_delay_ms, 0, "{} {}", point.id, grade.name);
            }
        }
        if let Some(HazardSourceId(index)) = point.hazard_source {
            assert!((index as usize) < spec.hazard_sources.len(), "{}", point.id);
        }
    }
}

#[test]
fn coal_mine_example_is_valid_and_compiles() {
    let config = load("coal-mine.toml");
    assert_eq!(config.devices.len(), 3);
    assert_eq!(config.points.len(), 17);
    assert_eq!(config.hazard_sources.len(), 3);
    assert_eq!(config.actions.len(), 2);
    // The face action takes every power-cut point of its hazard source, locks out on
    // their faults and on the substation, and adds its two points.
    let plan = hazgate::gateway::Plan::from_config(&config);
    let face = &plan.actions[0];
    let id = |p: hazgate::model::PointId| plan.spec.points[p.0 as usize].id.as_str();
    let triggers: Vec<&str> = face.triggers.iter().map(|t| id(t.point)).collect();
    assert_eq!(triggers, ["CH4-1201-T1", "CH4-1201-T2", "CH4-1201-T3"]);
    let lockout: Vec<&str> = face.lockout.iter().map(|p| id(*p)).collect();
    assert!(lockout.contains(&"device:KJ-SUB-1201"), "{lockout:?}");
    assert_eq!(
        (id(face.cut_point), id(face.status_point)),
        ("cut:cut-1201", "action:cut-1201")
    );
    assert_eq!(plan.actions[1].restore, hazgate::actions::Restore::Manual);

    let spec = config.engine_spec();
    assert_spec_invariants(&spec);
    assert_eq!(spec.points.len(), 17);
    assert_eq!(spec.hazard_sources.len(), 3);

    // T1 at the longwall face: alarm ≥1.0, cut ≥1.5, restore <1.0.
    let t1 = &spec.points[0];
    assert_eq!(t1.id, "CH4-1201-T1");
    assert_eq!(t1.grades.len(), 2);
    assert_eq!(
        (
            t1.grades[0].trigger,
            t1.grades[0].restore,
            t1.grades[0].power_cut
        ),
        (1.0, 1.0, false)
    );
    assert_eq!(
        (
            t1.grades[1].trigger,
            t1.grades[1].restore,
            t1.grades[1].power_cut
        ),
        (1.5, 1.0, true)
    );
    assert_eq!(t1.grades[1].colour, Colour::Red);
    assert_eq!(t1.hazard_source, Some(HazardSourceId(0)));
    // Grade 1 source → 1 s polling, stale after 3 polls.
    assert_eq!(t1.stale_after_ms, Some(3_000));

    // T2 return: alarm = cut = 1.0 as one power-cut grade; T3 intake 0.5.
    let t2 = &spec.points[1];
    assert_eq!(t2.grades.len(), 1);
    assert_eq!(
        (
            t2.grades[0].trigger,
            t2.grades[0].restore,
            t2.grades[0].power_cut
        ),
        (1.0, 1.0, true)
    );
    let t3 = &spec.points[2];
    assert_eq!(
        (
            t3.grades[0].trigger,
            t3.grades[0].restore,
            t3.grades[0].power_cut
        ),
        (0.5, 0.5, true)
    );

    // CO 24 ppm with a 2 ppm deadband → restore 22.
    let co = spec.points.iter().find(|p| p.id == "CO-1201-RET").unwrap();
    assert_eq!((co.grades[0].trigger, co.grades[0].restore), (24.0, 22.0));

    // O2: low grades 20.0 then 19.5.
    let o2 = spec.points.iter().find(|p| p.id == "O2-1201-IN").unwrap();
    let lows: Vec<f64> = o2.grades.iter().map(|g| g.trigger).collect();
    assert_eq!(lows, vec![20.0, 19.5]);
    assert!(o2.grades.iter().all(|g| g.direction == Direction::Low));

    // Wind speed: high grades before low ones.
    let wind = spec.points.iter().find(|p| p.id == "WS-1201-FACE").unwrap();
    assert_eq!(wind.grades[0].direction, Direction::High);
    assert_eq!(wind.grades[1].direction, Direction::Low);
    assert_eq!(wind.grades[1].trigger, 0.25);

    // Sump level: rate rule; device polled every 5 s.
    let sump = spec.points.iter().find(|p| p.id == "LVL-SUMP").unwrap();
    let rate = sump.rate.as_ref().unwrap();
    assert_eq!((rate.rise_per_h, rate.window_ms), (Some(0.5), 600_000));
    assert_eq!(sump.stale_after_ms, Some(15_000));

    // Every coal-mine safety point is polled within 30 s.
    for (i, point) in config.points.iter().enumerate() {
        if point.safety {
            assert!(config.point_interval_ms(i) <= 30_000, "{}", point.id);
        }
    }
}

#[test]
fn chemical_plant_example_is_valid_and_compiles() {
    let config = load("chemical-plant.toml");
    assert_eq!(config.devices.len(), 3);
    assert_eq!(config.points.len(), 13);
    assert_eq!(config.hazard_sources.len(), 4);
    let grades: Vec<u8> = config.hazard_sources.iter().map(|h| h.grade).collect();
    assert_eq!(grades, vec![1, 2, 3, 4]);

    let spec = config.engine_spec();
    assert_spec_invariants(&spec);

    // GB/T 50493: combustible level 1 at 25 %LEL, level 2 at 50 %LEL.
    let lel = &spec.points[0];
    assert_eq!(lel.id, "LEL-TK101-N");
    let triggers: Vec<f64> = lel.grades.iter().map(|g| g.trigger).collect();
    assert_eq!(triggers, vec![25.0, 50.0]);
    assert!(lel.grades[1].power_cut);
    assert_eq!(lel.grades[1].restore, 25.0);

    // MQTT-fed points exist and use the MQTT device's 5 s expected interval.
    let mqtt_points: Vec<_> = config.points.iter().filter(|p| p.mqtt.is_some()).collect();
    assert_eq!(mqtt_points.len(), 2);
    let h2s = spec
        .points
        .iter()
        .find(|p| p.id == "H2S-TK201-FOOT")
        .unwrap();
    assert_eq!(h2s.stale_after_ms, Some(15_000));
    assert_eq!(h2s.hazard_source, Some(HazardSourceId(1)));

    // Hazard source rules carried through.
    assert_eq!(spec.hazard_sources[0].rules.len(), 2);
    assert_eq!(spec.hazard_sources[0].rules[1].colour, Colour::Red);
    assert_eq!(spec.alarm_rate.flood_start_per_10min, 10);
}

#[test]
fn programmatic_validation_agrees_with_loading() {
    let config = load("coal-mine.toml");
    assert_eq!(config.validate(), Ok(()));
    let mut broken = config.clone();
    broken.points[0].thresholds[1].on_delay_ms = 500;
    let problems = broken.validate().unwrap_err();
    assert_eq!(problems.len(), 1);
    assert_eq!(
        problems[0].path.to_string(),
        "points[0].thresholds[1].on_delay_ms"
    );
}

#[test]
fn simulated_coal_mine_matches_the_gas_leak_scenario() {
    let config = load("sim-coal-mine.toml");
    let spec = config.engine_spec();
    assert_spec_invariants(&spec);
    // Every register the config reads is one the scenario serves.
    let scenario = hazgate_sim::scenario::Scenario::load(std::path::Path::new(
        "simulators/scenarios/coal-gas-leak.toml",
    ))
    .unwrap();
    let device = scenario
        .devices
        .iter()
        .find(|d| d.id == "kj-substation-1")
        .unwrap();
    assert_eq!(device.port, 1502);
    for p in &config.points {
        let b = p.modbus.as_ref().unwrap();
        let served = match b.table {
            hazgate::config::RegisterTable::DiscreteInput => {
                device.relays.iter().any(|r| r.feed_input == b.address)
            }
            hazgate::config::RegisterTable::Coil => {
                device.relays.iter().any(|r| r.coil == b.address)
            }
            table => {
                use hazgate::config::RegisterTable as T;
                use hazgate_sim::pdu::Table as S;
                let want = match table {
                    T::Coil => S::Coils,
                    T::DiscreteInput => S::DiscreteInputs,
                    T::Holding => S::HoldingRegisters,
                    T::Input => S::InputRegisters,
                };
                device
                    .points
                    .iter()
                    .any(|sp| sp.address == b.address && sp.table == want)
            }
        };
        assert!(
            served,
            "{} reads {:?} {} which the scenario does not serve",
            p.id, b.table, b.address
        );
    }
    // Every relay an action writes is one of the scenario's relays, and its feedback
    // point reads that relay's feed.
    for a in &config.actions {
        for r in &a.relays {
            let relay = device.relays.iter().find(|x| x.coil == r.address).unwrap();
            let feed = config
                .points
                .iter()
                .find(|p| Some(&p.id) == r.feedback.as_ref())
                .unwrap();
            assert_eq!(feed.modbus.as_ref().unwrap().address, relay.feed_input);
        }
    }
}
