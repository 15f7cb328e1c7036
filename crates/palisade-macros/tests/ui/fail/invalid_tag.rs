#[palisade::protocol]
trait Chat {
    #[event("room join")]
    async fn join(&mut self, room: String);
}

fn main() {}
