//! The UCI Occupancy Detection readings the demo replays (see data/uci_occupancy).

/// The dataset, carried in the binary so the demo needs no files.
pub const UCI_OCCUPANCY: &str = include_str!("../../data/uci_occupancy/datatraining.txt");

/// One reading of the office.
#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    /// `YYYY-MM-DD HH:MM:SS` as recorded.
    pub time: String,
    pub temperature: f64,
    pub humidity: f64,
    pub light: f64,
    pub co2: f64,
    pub occupied: bool,
}

/// A row that does not parse, with its line number.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("dataset line {line}: {problem}")]
pub struct DatasetError {
    pub line: usize,
    pub problem: String,
}

/// Parses the dataset's CSV: a header line, then rows of 7 fields whose first two
/// may be quoted (`"1","2015-02-04 17:51:00",23.18,27.272,426,721.25,1`).
pub fn parse(text: &str) -> Result<Vec<Reading>, DatasetError> {
    text.lines()
        .enumerate()
        .skip(1)
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, line)| parse_row(line).map_err(|problem| DatasetError { line: i + 1, problem }))
        .collect()
}

fn parse_row(line: &str) -> Result<Reading, String> {
    let fields: Vec<&str> = line.split(',').map(|f| f.trim().trim_matches('"')).collect();
    if fields.len() != 7 {
        return Err(format!("expected 7 fields, found {}", fields.len()));
    }
    let number =
        |i: usize, name: &str| fields[i].parse::<f64>().map_err(|_| format!("{name} {:?} is not a number", fields[i]));
    Ok(Reading {
        time: fields[1].to_owned(),
        temperature: number(2, "temperature")?,
        humidity: number(3, "humidity")?,
        light: number(4, "light")?,
        co2: number(5, "CO2")?,
        occupied: match fields[6] {
            "1" => true,
            "0" => false,
            other => return Err(format!("occupancy {other:?} is not 0 or 1")),
        },
    })
}

impl Reading {
    /// The reading as a Zigbee2MQTT multi-sensor reports it.
    pub fn to_zigbee2mqtt_json(&self) -> String {
        format!(
            r#"{{"temperature":{},"humidity":{},"illuminance":{},"co2":{},"occupancy":{}}}"#,
            self.temperature, self.humidity, self.light, self.co2, self.occupied
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_dataset_parses_whole() {
        let rows = parse(UCI_OCCUPANCY).unwrap();
        assert_eq!(rows.len(), 3000);
        assert_eq!(rows.iter().filter(|r| r.occupied).count(), 1141);
        assert_eq!(rows[0].time, "2015-02-04 17:51:00");
        assert_eq!(rows[0].co2, 721.25);
    }

    #[test]
    fn quoted_and_unquoted_dates_both_parse() {
        let text = "header\n\"1\",2015-02-11 14:48:00,21.76,31.13,437.3,1029.6,1\n";
        let rows = parse(text).unwrap();
        assert_eq!(rows[0].time, "2015-02-11 14:48:00");
        assert!(rows[0].occupied);
    }

    #[test]
    fn bad_rows_name_their_line() {
        let err = parse("header\n\"1\",\"t\",x,1,1,1,1\n").unwrap_err();
        assert_eq!(err.line, 2);
        assert!(err.problem.contains("temperature"));
    }

    #[test]
    fn json_is_what_zigbee2mqtt_sends() {
        let r =
            Reading { time: "t".into(), temperature: 23.5, humidity: 27.0, light: 426.0, co2: 721.25, occupied: true };
        let v: serde_json::Value = serde_json::from_str(&r.to_zigbee2mqtt_json()).unwrap();
        assert_eq!(v["occupancy"], true);
        assert_eq!(v["co2"], 721.25);
    }
}
