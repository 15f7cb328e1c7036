#[palisade::protocol]
trait Chat {
    #[event("say")]
    async fn say(&mut self, text: &str);
}

fn main() {}
