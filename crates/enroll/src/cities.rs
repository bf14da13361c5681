//! A small table of world cities (name, latitude, longitude in degrees), rounded to
//! 0.01°, for locality measurements and demos.

/// A city and its coordinates.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct City {
    /// City name.
    pub name: &'static str,
    /// Latitude, degrees north.
    pub lat: f64,
    /// Longitude, degrees east.
    pub lon: f64,
}

/// The table, one city a line: name, latitude, longitude, separated by tabs (`#` starts a
/// comment line). Kept as data beside this file.
const TABLE: &str = include_str!("cities.tsv");

/// 58 cities on every inhabited continent, in the table's order.
pub static CITIES: std::sync::LazyLock<Vec<City>> = std::sync::LazyLock::new(|| {
    TABLE
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(parse)
        .collect()
});

/// One line of the table; `None` for a malformed one (the tests check there is none).
fn parse(line: &'static str) -> Option<City> {
    let mut f = line.split('\t');
    let (name, lat, lon) = (f.next()?, f.next()?, f.next()?);
    Some(City {
        name,
        lat: lat.parse().ok()?,
        lon: lon.parse().ok()?,
    })
}

/// Great-circle distance in kilometres (haversine, mean Earth radius 6371 km).
pub fn distance_km(lat1: f64, lon1: f64, lat2: f64, lon2: f64) -> f64 {
    let (p1, p2) = (lat1.to_radians(), lat2.to_radians());
    let dp = p2 - p1;
    let dl = (lon2 - lon1).to_radians();
    let a = (dp / 2.0).sin().powi(2) + p1.cos() * p2.cos() * (dl / 2.0).sin().powi(2);
    2.0 * 6371.0 * a.sqrt().min(1.0).asin()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_sane() {
        // Every line of the table is a city: none was dropped as malformed.
        let lines = TABLE
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty());
        assert_eq!(lines.count(), CITIES.len());
        assert_eq!(CITIES.len(), 58);
        assert_eq!(
            CITIES[0],
            City {
                name: "Oslo",
                lat: 59.91,
                lon: 10.75
            }
        );
        for city in CITIES.iter() {
            assert!(
                crate::layer::validate_location(city.lat, city.lon).is_ok(),
                "{city:?}"
            );
        }
        let mut names: Vec<_> = CITIES.iter().map(|c| c.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), CITIES.len());
    }

    #[test]
    fn oslo_to_london_is_about_1150_km() {
        let d = distance_km(59.91, 10.75, 51.51, -0.13);
        assert!((1100.0..1200.0).contains(&d), "{d}");
    }
}
