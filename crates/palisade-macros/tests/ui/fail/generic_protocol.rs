#[palisade::protocol]
trait Chat<T> {
    #[event("say")]
    async fn say(&mut self, payload: T);
}

fn main() {}
