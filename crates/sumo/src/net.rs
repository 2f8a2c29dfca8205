//! SUMO's road network (`.net.xml`): lanes with shapes, widths and speeds, edges, junction
//! areas, connections (with the internal lanes through junctions and their traffic lights) and
//! traffic-light programs; and the routes an ego can drive on it.

use deltaplan_sim::geom::Vec2;
use std::collections::HashMap;

/// SUMO's lane width where the network does not give one, metres.
pub const DEFAULT_LANE_WIDTH: f32 = 3.2;

/// One lane: normal (on an edge between junctions) or internal (through a junction).
#[derive(Clone, Debug, PartialEq)]
pub struct NetLane {
    pub id: String,
    pub edge: usize,
    pub index: u32,
    /// Metres per second.
    pub speed: f32,
    pub length: f32,
    pub width: f32,
    pub shape: Vec<Vec2>,
    /// Whether passenger cars may drive it (SUMO's `allow`/`disallow`; networks of real
    /// places have sidewalks, bicycle and tram lanes, which are neither road nor route here).
    pub cars: bool,
}

/// An edge: a directed road between two junctions, or a junction's internal edge.
#[derive(Clone, Debug, PartialEq)]
pub struct NetEdge {
    pub id: String,
    pub internal: bool,
    pub from: String,
    pub to: String,
    /// Lane indices into [`Network::lanes`], by SUMO lane index (0 = rightmost).
    pub lanes: Vec<usize>,
}

/// A junction and its area.
#[derive(Clone, Debug, PartialEq)]
pub struct Junction {
    pub id: String,
    pub kind: String,
    pub shape: Vec<Vec2>,
}

/// A link from one lane to the next, through a junction's internal lane (`via`).
#[derive(Clone, Debug, PartialEq)]
pub struct Connection {
    pub from_lane: usize,
    pub to_lane: usize,
    pub via: Option<usize>,
    /// The traffic light controlling it and the link's index in that light's state string.
    pub light: Option<(String, u32)>,
    /// SUMO's direction code: s(traight), l(eft), r(ight), t(urn around), ...
    pub dir: char,
}

/// One phase of a traffic-light program.
#[derive(Clone, Debug, PartialEq)]
pub struct Phase {
    pub duration: f32,
    pub state: String,
}

/// A traffic-light program.
#[derive(Clone, Debug, PartialEq)]
pub struct TlLogic {
    pub id: String,
    pub kind: String,
    pub offset: f32,
    pub phases: Vec<Phase>,
}

/// A parsed network.
#[derive(Clone, Debug, Default)]
pub struct Network {
    pub lanes: Vec<NetLane>,
    pub edges: Vec<NetEdge>,
    pub junctions: Vec<Junction>,
    pub connections: Vec<Connection>,
    pub tl_logics: Vec<TlLogic>,
    lane_ids: HashMap<String, usize>,
    edge_ids: HashMap<String, usize>,
}

/// A network file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("network {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("network XML: {0}")]
    Xml(#[from] roxmltree::Error),
    #[error("network: {element} lacks attribute `{attribute}`")]
    Missing {
        element: &'static str,
        attribute: &'static str,
    },
    #[error("network: attribute `{attribute}` = {value:?} is not a number or shape")]
    Number {
        attribute: &'static str,
        value: String,
    },
    #[error("network: {0} refers to an unknown lane or edge")]
    Unknown(String),
}

/// An ego route: the edges (for SUMO) and the lanes it drives, internal lanes included (for
/// the centreline).
#[derive(Clone, Debug, PartialEq)]
pub struct EgoRoute {
    pub edges: Vec<usize>,
    pub lanes: Vec<usize>,
    /// Per lane of `lanes`: the light controlling its end (its stop line), if any.
    pub lights: Vec<Option<(String, u32)>>,
}

impl Network {
    pub fn from_file(path: &std::path::Path) -> Result<Self, NetError> {
        let text = std::fs::read_to_string(path).map_err(|source| NetError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text)
    }

    pub fn parse(text: &str) -> Result<Self, NetError> {
        let doc = roxmltree::Document::parse(text)?;
        let mut net = Network::default();
        let root = doc.root_element();
        // Elements may sit at the top level or in wrappers (some netgenerate versions write
        // `<junctions>`): every element of these kinds counts, wherever it is.
        for node in root.descendants().filter(|n| n.is_element()) {
            match node.tag_name().name() {
                "edge" => net.add_edge(node)?,
                "junction" => {
                    let shape = match node.attribute("shape") {
                        Some(s) => parse_shape("shape", s)?,
                        None => Vec::new(),
                    };
                    net.junctions.push(Junction {
                        id: attr(node, "junction", "id")?.to_string(),
                        kind: node.attribute("type").unwrap_or("").to_string(),
                        shape,
                    });
                }
                "tlLogic" => {
                    let mut phases = Vec::new();
                    for p in node.children().filter(|n| n.has_tag_name("phase")) {
                        phases.push(Phase {
                            duration: number(p, "phase", "duration")?,
                            state: attr(p, "phase", "state")?.to_string(),
                        });
                    }
                    net.tl_logics.push(TlLogic {
                        id: attr(node, "tlLogic", "id")?.to_string(),
                        kind: node.attribute("type").unwrap_or("static").to_string(),
                        offset: node
                            .attribute("offset")
                            .and_then(|o| o.parse().ok())
                            .unwrap_or(0.0),
                        phases,
                    });
                }
                _ => {}
            }
        }
        for node in root.descendants().filter(|n| n.has_tag_name("connection")) {
            let from = attr(node, "connection", "from")?;
            let to = attr(node, "connection", "to")?;
            let from_lane = net.lane_of(from, attr(node, "connection", "fromLane")?)?;
            let to_lane = net.lane_of(to, attr(node, "connection", "toLane")?)?;
            let via = match node.attribute("via") {
                Some(v) => Some(
                    *net.lane_ids
                        .get(v)
                        .ok_or_else(|| NetError::Unknown(format!("connection via {v}")))?,
                ),
                None => None,
            };
            let light = match (node.attribute("tl"), node.attribute("linkIndex")) {
                (Some(tl), Some(i)) => Some((
                    tl.to_string(),
                    i.parse().map_err(|_| NetError::Number {
                        attribute: "linkIndex",
                        value: i.to_string(),
                    })?,
                )),
                _ => None,
            };
            net.connections.push(Connection {
                from_lane,
                to_lane,
                via,
                light,
                dir: node
                    .attribute("dir")
                    .and_then(|d| d.chars().next())
                    .unwrap_or('s'),
            });
        }
        Ok(net)
    }

    fn add_edge(&mut self, node: roxmltree::Node) -> Result<(), NetError> {
        let id = attr(node, "edge", "id")?.to_string();
        let internal = node.attribute("function") == Some("internal");
        // Walking areas and crossings are for pedestrians.
        if matches!(node.attribute("function"), Some("walkingarea" | "crossing")) {
            return Ok(());
        }
        let e = self.edges.len();
        let mut lanes = Vec::new();
        for l in node.children().filter(|n| n.has_tag_name("lane")) {
            let lane = NetLane {
                id: attr(l, "lane", "id")?.to_string(),
                edge: e,
                index: number(l, "lane", "index")? as u32,
                speed: number(l, "lane", "speed")?,
                length: number(l, "lane", "length")?,
                width: l
                    .attribute("width")
                    .and_then(|w| w.parse().ok())
                    .unwrap_or(DEFAULT_LANE_WIDTH),
                shape: parse_shape("shape", attr(l, "lane", "shape")?)?,
                cars: allows_cars(l),
            };
            self.lane_ids.insert(lane.id.clone(), self.lanes.len());
            lanes.push(self.lanes.len());
            self.lanes.push(lane);
        }
        self.edge_ids.insert(id.clone(), e);
        self.edges.push(NetEdge {
            id,
            internal,
            from: node.attribute("from").unwrap_or("").to_string(),
            to: node.attribute("to").unwrap_or("").to_string(),
            lanes,
        });
        Ok(())
    }

    fn lane_of(&self, edge: &str, index: &str) -> Result<usize, NetError> {
        let e = self
            .edge_ids
            .get(edge)
            .ok_or_else(|| NetError::Unknown(format!("edge {edge}")))?;
        let i: usize = index.parse().map_err(|_| NetError::Number {
            attribute: "lane index",
            value: index.to_string(),
        })?;
        self.edges[*e]
            .lanes
            .get(i)
            .copied()
            .ok_or_else(|| NetError::Unknown(format!("lane {i} of edge {edge}")))
    }

    pub fn lane(&self, id: &str) -> Option<usize> {
        self.lane_ids.get(id).copied()
    }

    pub fn edge(&self, id: &str) -> Option<usize> {
        self.edge_ids.get(id).copied()
    }

    /// The lanes of edge `e` cars may drive, by SUMO lane index.
    pub fn car_lanes(&self, e: usize) -> Vec<usize> {
        let lanes = &self.edges[e].lanes;
        lanes
            .iter()
            .copied()
            .filter(|&l| self.lanes[l].cars)
            .collect()
    }

    /// Connections leaving lane `lane`.
    pub fn connections_from(&self, lane: usize) -> impl Iterator<Item = &Connection> {
        self.connections.iter().filter(move |c| c.from_lane == lane)
    }

    /// A route drawn from `rng`: a random start edge, then random turns (never a U-turn)
    /// until it is at least `min_length` metres long or reaches a dead end; the lanes it drives
    /// (keeping its lane index where it can) with the internal lanes between. `None` when no
    /// start gives `min_length` within a few tries.
    pub fn random_route(&self, rng: &mut impl rand::Rng, min_length: f32) -> Option<EgoRoute> {
        use rand::RngExt;
        let normal: Vec<usize> = (0..self.edges.len())
            .filter(|&e| !self.edges[e].internal && !self.car_lanes(e).is_empty())
            .collect();
        if normal.is_empty() {
            return None;
        }
        for _ in 0..20 {
            let e0 = normal[rng.random_range(0..normal.len())];
            let lanes0 = self.car_lanes(e0);
            let mut lane = lanes0[rng.random_range(0..lanes0.len())];
            let mut route = EgoRoute {
                edges: vec![e0],
                lanes: vec![lane],
                lights: vec![None],
            };
            let mut length = self.lanes[lane].length;
            while length < min_length && route.edges.len() < 64 {
                // Connections from this edge's lanes (prefer the current lane's), no U-turns.
                let choices: Vec<&Connection> = self
                    .connections_from(lane)
                    .filter(|c| c.dir != 't' && c.dir != 'T' && self.lanes[c.to_lane].cars)
                    .collect();
                let Some(c) =
                    (!choices.is_empty()).then(|| choices[rng.random_range(0..choices.len())])
                else {
                    break;
                };
                *route.lights.last_mut().expect("route has a lane") = c.light.clone();
                let mut internal = c.via;
                while let Some(v) = internal {
                    route.lanes.push(v);
                    route.lights.push(None);
                    length += self.lanes[v].length;
                    // An internal lane may continue through another one (turns wait inside
                    // the junction): follow it towards the same destination.
                    internal = self
                        .connections_from(v)
                        .find(|n| self.lanes[n.to_lane].edge == self.lanes[c.to_lane].edge)
                        .and_then(|n| n.via);
                }
                lane = c.to_lane;
                route.edges.push(self.lanes[lane].edge);
                route.lanes.push(lane);
                route.lights.push(None);
                length += self.lanes[lane].length;
            }
            if length >= min_length {
                return Some(route);
            }
        }
        None
    }
}

/// Whether a `<lane>` admits passenger cars: listed in `allow` (or `all`), else not listed in
/// `disallow`; a lane with neither admits every class.
fn allows_cars(lane: roxmltree::Node) -> bool {
    let lists = |key| {
        lane.attribute(key)
            .map(|v: &str| v.split_whitespace().any(|c| c == "passenger" || c == "all"))
    };
    match (lists("allow"), lists("disallow")) {
        (Some(allowed), _) => allowed,
        (None, Some(disallowed)) => !disallowed,
        (None, None) => true,
    }
}

fn attr<'a>(
    node: roxmltree::Node<'a, '_>,
    element: &'static str,
    attribute: &'static str,
) -> Result<&'a str, NetError> {
    node.attribute(attribute)
        .ok_or(NetError::Missing { element, attribute })
}

fn number(
    node: roxmltree::Node,
    element: &'static str,
    attribute: &'static str,
) -> Result<f32, NetError> {
    let v = attr(node, element, attribute)?;
    v.parse().map_err(|_| NetError::Number {
        attribute,
        value: v.to_string(),
    })
}

/// A SUMO shape: "x,y x,y ..." (a third coordinate, where given, is dropped).
pub fn parse_shape(attribute: &'static str, s: &str) -> Result<Vec<Vec2>, NetError> {
    let bad = || NetError::Number {
        attribute,
        value: s.to_string(),
    };
    s.split_whitespace()
        .map(|p| {
            let mut it = p.split(',');
            let x: f32 = it.next().ok_or_else(bad)?.parse().map_err(|_| bad())?;
            let y: f32 = it.next().ok_or_else(bad)?.parse().map_err(|_| bad())?;
            Ok(Vec2::new(x, y))
        })
        .collect()
}

/// Whether `p` lies inside the polygon `poly` (even-odd rule).
pub fn point_in_polygon(p: Vec2, poly: &[Vec2]) -> bool {
    let mut inside = false;
    let n = poly.len();
    for i in 0..n {
        let a = poly[i];
        let b = poly[(i + n - 1) % n];
        if (a.y > p.y) != (b.y > p.y) {
            let x = a.x + (p.y - a.y) / (b.y - a.y) * (b.x - a.x);
            if p.x < x {
                inside = !inside;
            }
        }
    }
    inside
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two edges meeting at a signalised junction J, with the internal lane between them (the
    /// junction inside a `<junctions>` wrapper, as some netgenerate versions write it).
    const NET: &str = r#"<net version="1.20">
      <edge id=":J_0" function="internal">
        <lane id=":J_0_0" index="0" speed="13.89" length="10.00" shape="100.00,-1.60 110.00,-1.60"/>
      </edge>
      <edge id="a" from="S" to="J" priority="-1">
        <lane id="a_0" index="0" speed="13.89" length="100.00" width="3.50" shape="0.00,-1.60 100.00,-1.60"/>
      </edge>
      <edge id="b" from="J" to="E" priority="-1">
        <lane id="b_0" index="0" speed="8.00" length="90.00" shape="110.00,-1.60 200.00,-1.60"/>
      </edge>
      <tlLogic id="J" type="static" programID="0" offset="5">
        <phase duration="30" state="G"/>
        <phase duration="3" state="y"/>
        <phase duration="20" state="r"/>
      </tlLogic>
      <junctions>
        <junction id="J" type="traffic_light" x="105.00" y="0.00" shape="100.00,0.00 110.00,0.00 110.00,-3.20 100.00,-3.20"/>
      </junctions>
      <connection from="a" to="b" fromLane="0" toLane="0" via=":J_0_0" tl="J" linkIndex="0" dir="s" state="O"/>
      <connection from=":J_0" to="b" fromLane="0" toLane="0" dir="s" state="M"/>
    </net>"#;

    #[test]
    fn lanes_cars_may_not_use_are_never_routed() {
        // Edge a: a sidewalk (index 0, pedestrians only), a car lane, a bus-and-bike lane
        // (passenger disallowed); edge b: a sidewalk and a car lane (allow lists passenger).
        let net = Network::parse(
            r#"<net>
          <edge id="a" from="S" to="J">
            <lane id="a_0" index="0" allow="pedestrian" speed="2" length="100" shape="0,-5 100,-5"/>
            <lane id="a_1" index="1" speed="13" length="100" shape="0,-1.6 100,-1.6"/>
            <lane id="a_2" index="2" disallow="passenger truck" speed="13" length="100" shape="0,1.6 100,1.6"/>
          </edge>
          <edge id="b" from="J" to="E">
            <lane id="b_0" index="0" allow="pedestrian bicycle" speed="2" length="100" shape="100,-5 200,-5"/>
            <lane id="b_1" index="1" allow="passenger bus" speed="13" length="100" shape="100,-1.6 200,-1.6"/>
          </edge>
          <connection from="a" to="b" fromLane="0" toLane="0" dir="s"/>
          <connection from="a" to="b" fromLane="1" toLane="1" dir="s"/>
          <connection from="a" to="b" fromLane="2" toLane="0" dir="s"/>
        </net>"#,
        )
        .unwrap();
        let cars: Vec<bool> = ["a_0", "a_1", "a_2", "b_0", "b_1"]
            .iter()
            .map(|id| net.lanes[net.lane(id).unwrap()].cars)
            .collect();
        assert_eq!(cars, [false, true, false, false, true]);
        // Every route drives a_1 then b_1: the only lanes cars may use.
        let mut rng = deltaplan_stdx::seed::rng(1, 2);
        for _ in 0..20 {
            let r = net.random_route(&mut rng, 150.0).unwrap();
            let ids: Vec<&str> = r.lanes.iter().map(|&l| net.lanes[l].id.as_str()).collect();
            assert_eq!(ids, ["a_1", "b_1"]);
        }
    }

    #[test]
    fn parses_lanes_connections_lights_and_junctions() {
        let net = Network::parse(NET).unwrap();
        assert_eq!(net.edges.len(), 3);
        let a = net.lane("a_0").unwrap();
        let b = net.lane("b_0").unwrap();
        let via = net.lane(":J_0_0").unwrap();
        assert_eq!(net.lanes[a].width, 3.5);
        assert_eq!(net.lanes[b].width, DEFAULT_LANE_WIDTH);
        assert_eq!(net.lanes[b].speed, 8.0);
        assert_eq!(
            net.lanes[a].shape,
            vec![Vec2::new(0.0, -1.6), Vec2::new(100.0, -1.6)]
        );
        let c = net.connections_from(a).next().unwrap();
        assert_eq!((c.to_lane, c.via), (b, Some(via)));
        assert_eq!(c.light, Some(("J".to_string(), 0)));
        assert_eq!(net.tl_logics[0].offset, 5.0);
        assert_eq!(net.tl_logics[0].phases[2].state, "r");
        assert!(net.edges[net.edge(":J_0").unwrap()].internal);
        let j = &net.junctions[0];
        assert!(point_in_polygon(Vec2::new(105.0, -1.0), &j.shape));
        assert!(!point_in_polygon(Vec2::new(105.0, 1.0), &j.shape));
        assert!(!point_in_polygon(Vec2::new(99.0, -1.0), &j.shape));
    }

    #[test]
    fn a_route_drives_through_the_internal_lane_and_knows_its_light() {
        let net = Network::parse(NET).unwrap();
        // Only edge a reaches 150 m (a + junction + b = 200 m); b alone is 90 m.
        let mut rng = deltaplan_stdx::seed::rng(1, 0);
        let r = net.random_route(&mut rng, 150.0).unwrap();
        let names: Vec<&str> = r.lanes.iter().map(|&l| net.lanes[l].id.as_str()).collect();
        assert_eq!(names, ["a_0", ":J_0_0", "b_0"]);
        assert_eq!(r.lights[0], Some(("J".to_string(), 0)));
        assert_eq!(r.lights[1..], [None, None]);
        assert_eq!(r.edges.len(), 2);
        assert!(net.random_route(&mut rng, 500.0).is_none());
    }

    #[test]
    fn bad_numbers_and_missing_attributes_are_named() {
        let e = Network::parse(r#"<net><edge id="a"><lane id="a_0" index="0" speed="fast" length="1" shape="0,0 1,0"/></edge></net>"#).unwrap_err();
        assert!(
            e.to_string().contains("speed") && e.to_string().contains("fast"),
            "{e}"
        );
        let e = Network::parse(
            r#"<net><edge id="a"><lane id="a_0" index="0" speed="1" length="1"/></edge></net>"#,
        )
        .unwrap_err();
        assert!(e.to_string().contains("shape"), "{e}");
    }
}
