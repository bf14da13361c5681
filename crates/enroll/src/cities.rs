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

const fn c(name: &'static str, lat: f64, lon: f64) -> City {
    City { name, lat, lon }
}

/// 58 cities on every inhabited continent.
pub const CITIES: &[City] = &[
    c("Oslo", 59.91, 10.75),
    c("Trondheim", 63.43, 10.40),
    c("Grimstad", 58.34, 8.59),
    c("Stockholm", 59.33, 18.07),
    c("Copenhagen", 55.68, 12.57),
    c("Helsinki", 60.17, 24.94),
    c("Berlin", 52.52, 13.40),
    c("Munich", 48.14, 11.58),
    c("Amsterdam", 52.37, 4.90),
    c("Brussels", 50.85, 4.35),
    c("Paris", 48.86, 2.35),
    c("London", 51.51, -0.13),
    c("Dublin", 53.35, -6.26),
    c("Madrid", 40.42, -3.70),
    c("Lisbon", 38.72, -9.14),
    c("Rome", 41.90, 12.50),
    c("Vienna", 48.21, 16.37),
    c("Warsaw", 52.23, 21.01),
    c("Prague", 50.08, 14.44),
    c("Athens", 37.98, 23.73),
    c("Istanbul", 41.01, 28.98),
    c("Moscow", 55.76, 37.62),
    c("Kyiv", 50.45, 30.52),
    c("Cairo", 30.04, 31.24),
    c("Lagos", 6.52, 3.38),
    c("Nairobi", -1.29, 36.82),
    c("Johannesburg", -26.20, 28.05),
    c("Cape Town", -33.92, 18.42),
    c("Casablanca", 33.57, -7.59),
    c("Dubai", 25.20, 55.27),
    c("Tehran", 35.69, 51.39),
    c("Mumbai", 19.08, 72.88),
    c("Delhi", 28.61, 77.21),
    c("Bangalore", 12.97, 77.59),
    c("Dhaka", 23.81, 90.41),
    c("Bangkok", 13.76, 100.50),
    c("Singapore", 1.35, 103.82),
    c("Jakarta", -6.21, 106.85),
    c("Hong Kong", 22.32, 114.17),
    c("Shanghai", 31.23, 121.47),
    c("Beijing", 39.90, 116.41),
    c("Seoul", 37.57, 126.98),
    c("Tokyo", 35.68, 139.69),
    c("Osaka", 34.69, 135.50),
    c("Manila", 14.60, 120.98),
    c("Sydney", -33.87, 151.21),
    c("Melbourne", -37.81, 144.96),
    c("Auckland", -36.85, 174.76),
    c("Los Angeles", 34.05, -118.24),
    c("San Francisco", 37.77, -122.42),
    c("Seattle", 47.61, -122.33),
    c("Chicago", 41.88, -87.63),
    c("New York", 40.71, -74.01),
    c("Toronto", 43.65, -79.38),
    c("Mexico City", 19.43, -99.13),
    c("Sao Paulo", -23.55, -46.63),
    c("Buenos Aires", -34.60, -58.38),
    c("Bogota", 4.71, -74.07),
];

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
        assert!(CITIES.len() >= 50);
        for city in CITIES {
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
