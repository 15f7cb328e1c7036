#[palisade::protocol]
trait Chat {
    #[request("room.count")]
    async fn count(&mut self, room: String) -> u32;
}

fn main() {}
