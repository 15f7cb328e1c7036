#[palisade::protocol]
trait Chat {
    #[request("room.join")]
    fn join(&mut self, payload: String) -> Result<(), palisade::json::ErrorReply>;
}

fn main() {}
