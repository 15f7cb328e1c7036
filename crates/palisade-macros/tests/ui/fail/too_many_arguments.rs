#[palisade::protocol]
trait Chat {
    #[event("say")]
    async fn say(&mut self, room: String, text: String, urgent: bool);
}

fn main() {}
