#[palisade::protocol]
trait Chat {
    #[event("say")]
    async fn say(&mut self, cx: &String, payload: String);
}

fn main() {}
