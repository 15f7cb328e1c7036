#[palisade::protocol]
trait Chat {
    async fn join(&mut self, room: String);
}

fn main() {}
