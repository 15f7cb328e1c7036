#[palisade::protocol]
trait Chat {
    #[request("room.join")]
    async fn join(&mut self, room: String);
}

fn main() {}
