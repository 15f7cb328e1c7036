#[palisade::protocol]
trait Chat {
    #[event("say", validated)]
    async fn say(&mut self, payload: String);
}

fn main() {}
