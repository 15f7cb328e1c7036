#[palisade::protocol]
trait Chat {
    #[event("typing")]
    async fn typing(&mut self, room: String) -> bool;
}

fn main() {}
