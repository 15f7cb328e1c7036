#[palisade::protocol]
trait Chat {
    #[event("serve")]
    async fn serve(&mut self, payload: String);
}

fn main() {}
