//! The WebSocket families of `/metrics`, per worker (`worker="N"`), read live from the
//! load table that the connections count into (`load.rs`, relaxed counters).

use std::sync::atomic::Ordering::Relaxed;

use super::text::{family, sample, Exposition};
use crate::load::{LoadTable, WsCounters, WS_CLOSE_CODES};

/// Appends the WebSocket families for the workers in `indices`.
pub fn render(out: &mut Exposition, load: &LoadTable, indices: &[usize]) {
    type Get = fn(&WsCounters) -> u64;
    let families: [(&str, &str, &str, Get); 5] = [
        (
            "uringapi_websockets_open",
            "gauge",
            "Open WebSockets on the worker.",
            |c| u64::from(c.open.load(Relaxed)),
        ),
        (
            "uringapi_websocket_messages_in_total",
            "counter",
            "Client messages passed to the worker's app.",
            |c| c.messages_in.load(Relaxed),
        ),
        (
            "uringapi_websocket_messages_out_total",
            "counter",
            "App messages written to clients.",
            |c| c.messages_out.load(Relaxed),
        ),
        (
            "uringapi_websocket_bytes_in_total",
            "counter",
            "Payload bytes of client messages (after inflating).",
            |c| c.bytes_in.load(Relaxed),
        ),
        (
            "uringapi_websocket_bytes_out_total",
            "counter",
            "Payload bytes of app messages (before compressing).",
            |c| c.bytes_out.load(Relaxed),
        ),
    ];
    for (name, kind, help, get) in families {
        family(out, name, kind, help);
        for &i in indices {
            let worker = i.to_string();
            sample(out, name, &[("worker", &worker)], get(&load.get(i).ws));
        }
    }
    let name = "uringapi_websocket_closes_total";
    family(
        out,
        name,
        "counter",
        "WebSockets ended, by close code (sent or received; 1006: the connection dropped).",
    );
    for &i in indices {
        let worker = i.to_string();
        let closes = &load.get(i).ws.closes;
        for (j, count) in closes.iter().enumerate() {
            let code = WS_CLOSE_CODES
                .get(j)
                .map_or_else(|| "other".to_owned(), u16::to_string);
            let labels = [("worker", worker.as_str()), ("code", code.as_str())];
            sample(out, name, &labels, count.load(Relaxed));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_show_per_worker_and_close_code() {
        let load = LoadTable::default();
        let w = load.get(1);
        w.ws_opened();
        w.ws_opened();
        w.ws_message_in(10);
        w.ws_message_out(7, false);
        w.ws_message_out(5, true);
        w.ws_closed(1001);
        w.ws_closed(4000);
        let mut exposition = Exposition::default();
        render(&mut exposition, &load, &[0, 1]);
        let out = exposition.into_text();
        for line in [
            "uringapi_websockets_open{worker=\"1\"} 0",
            "uringapi_websockets_open{worker=\"0\"} 0",
            "uringapi_websocket_messages_in_total{worker=\"1\"} 1",
            "uringapi_websocket_bytes_in_total{worker=\"1\"} 10",
            "uringapi_websocket_messages_out_total{worker=\"1\"} 1",
            "uringapi_websocket_bytes_out_total{worker=\"1\"} 12",
            "uringapi_websocket_closes_total{worker=\"1\",code=\"1001\"} 1",
            "uringapi_websocket_closes_total{worker=\"1\",code=\"other\"} 1",
            "uringapi_websocket_closes_total{worker=\"1\",code=\"1000\"} 0",
        ] {
            assert!(out.lines().any(|l| l == line), "{line} missing in\n{out}");
        }
    }
}
