#[palisade::protocol]
trait Chat {
    #[request("room.join")]
    async fn join(&mut self, room: String) -> Result<(), palisade::json::ErrorReply>;

    #[event("room.join")]
    async fn enter(&mut self, room: String);
}

fn main() {}
